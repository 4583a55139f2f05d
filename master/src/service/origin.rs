//! Which mount session a Meta request serves: the `elkfs-session` header, made the
//! [`ORIGIN`] of the changes the request commits while it is handled. A mount's reply
//! shows what its own change touched, so the master does not also send it the notices.

use crate::notices::ORIGIN;
use elkfs_proto::transport::SESSION_HEADER;
use tonic::codegen::{http, BoxFuture, Context, Poll, Service};
use tonic::server::NamedService;

#[derive(Clone)]
pub struct Origin<S>(pub S);

impl<S: NamedService> NamedService for Origin<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for Origin<S>
where
    S: Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let session = req
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Box::pin(ORIGIN.scope(session, self.0.call(req)))
    }
}
