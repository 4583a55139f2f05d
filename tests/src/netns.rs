//! A network namespace joined to the host by a veth pair, so a test can cut one daemon off
//! the network (a partition: its packets vanish, nothing is refused) and heal it again.
//! Needs root and `ip` (iproute2). Dropping it deletes the namespace and with it the pair.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

pub struct Netns {
    name: String,
    ns_if: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
}

impl Netns {
    /// A new namespace with a /30 link to the host: the host side gets `host_ip()`, the
    /// namespace side `ns_ip()`; the namespace's loopback is up.
    pub fn create() -> Netns {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        assert!(n < 64, "more than 64 namespaces in one test process");
        let pid = std::process::id();
        // Unique per test process (pid bits, like the loopback addresses) and per namespace.
        let base = Ipv4Addr::new(10, (pid >> 8) as u8, pid as u8, (n * 4) as u8);
        let [a, b, c, d] = base.octets();
        let netns = Netns {
            name: format!("elkfs-{pid}-{n}"),
            ns_if: format!("ek{pid}n{n}"),
            host_ip: Ipv4Addr::new(a, b, c, d + 1),
            ns_ip: Ipv4Addr::new(a, b, c, d + 2),
        };
        let host_if = format!("ek{pid}h{n}");
        // From here on Drop removes whatever part was made.
        ip(&["netns", "add", &netns.name]);
        ip(&[
            "link",
            "add",
            &host_if,
            "type",
            "veth",
            "peer",
            "name",
            &netns.ns_if,
            "netns",
            &netns.name,
        ]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", netns.host_ip),
            "dev",
            &host_if,
        ]);
        ip(&["link", "set", &host_if, "up"]);
        netns.exec_ip(&[
            "addr",
            "add",
            &format!("{}/30", netns.ns_ip),
            "dev",
            &netns.ns_if,
        ]);
        netns.exec_ip(&["link", "set", "lo", "up"]);
        netns.heal();
        netns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host's address on the link: daemons the namespace must reach bind this.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.host_ip
    }

    /// The address inside the namespace.
    pub fn ns_ip(&self) -> Ipv4Addr {
        self.ns_ip
    }

    /// Partition: the namespace's side of the link goes down. Its connections are not
    /// reset; packets just stop, in both directions. The host side keeps its address.
    pub fn cut(&self) {
        self.exec_ip(&["link", "set", &self.ns_if, "down"]);
    }

    /// Ends the partition.
    pub fn heal(&self) {
        self.exec_ip(&["link", "set", &self.ns_if, "up"]);
    }

    fn exec_ip(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name, "ip"];
        all.extend_from_slice(args);
        ip(&all);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace destroys its end of the veth pair, and so the pair.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running ip (iproute2 installed?): {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
