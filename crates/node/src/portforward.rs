//! `portForward` of the kubelet API.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::server::{Body, Server, text};

/// `/portForward/{ns}/{pod}?port=…`.
pub(crate) async fn handle(
    _srv: &Server,
    _ns: &str,
    _pod: &str,
    _query: &[(String, String)],
    _req: Request<Incoming>,
) -> Response<Body> {
    text(StatusCode::NOT_IMPLEMENTED, "port-forward is not implemented by this node yet")
}
