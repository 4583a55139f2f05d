//! The metalogger follows the master changelog; it is specified in issue 4 and not built yet.
