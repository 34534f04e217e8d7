//! The web client (`web/` at the repository root), embedded in the binary and served at `/`
//! when `gateway.web_client` is on: fixed files, their content types, caching and the
//! Content-Security-Policy that keeps them free of inline and foreign scripts.

use std::sync::LazyLock;

use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

/// Scripts, styles and sockets from this origin only; no inline code, no frames, no plugins.
/// `connect-src 'self'` covers `ws://`/`wss://` to the same host (CSP level 3).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $file:literal, $type:literal) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!("../../../web/", $file)),
        }
    };
}

const ASSETS: &[Asset] = &[
    asset!("/", "index.html", "text/html; charset=utf-8"),
    asset!("/index.html", "index.html", "text/html; charset=utf-8"),
    asset!("/app.js", "app.js", "text/javascript; charset=utf-8"),
    asset!(
        "/protocol.js",
        "protocol.js",
        "text/javascript; charset=utf-8"
    ),
    asset!("/store.js", "store.js", "text/javascript; charset=utf-8"),
    asset!("/ui.js", "ui.js", "text/javascript; charset=utf-8"),
    asset!("/style.css", "style.css", "text/css; charset=utf-8"),
];

/// One ETag per asset, from its bytes (FNV-1a), so revalidation answers `304`.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let hash = a.body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
            });
            format!("\"{hash:016x}\"")
        })
        .collect()
});

/// `GET`/`HEAD` of the client's files; rejects everything else (and everything when
/// `enabled` is false) so that the gateway's other routes and its `404` apply.
pub fn routes(enabled: bool) -> BoxedFilter<(Response,)> {
    warp::get()
        .or(warp::head())
        .unify()
        .and(warp::path::full())
        .and(warp::header::optional::<String>("if-none-match"))
        .and_then(
            move |path: warp::path::FullPath, if_none_match: Option<String>| async move {
                let index = ASSETS
                    .iter()
                    .position(|a| enabled && a.path == path.as_str())
                    .ok_or_else(warp::reject::not_found)?;
                Ok::<_, warp::Rejection>(respond(index, if_none_match.as_deref()))
            },
        )
        .boxed()
}

fn respond(index: usize, if_none_match: Option<&str>) -> Response {
    let asset = &ASSETS[index];
    let etag = &ETAGS[index];
    let fresh = if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let builder = http::Response::builder()
        .header("content-type", asset.content_type)
        // The names carry no version: always revalidate, which the ETag makes cheap.
        .header("cache-control", "no-cache")
        .header("etag", etag.as_str())
        .header("content-security-policy", CONTENT_SECURITY_POLICY)
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer");
    let response: Result<Response, _> = if fresh {
        builder
            .status(http::StatusCode::NOT_MODIFIED)
            .body(Default::default())
    } else {
        builder.body(asset.body.into())
    };
    response.expect("static headers are valid")
}
