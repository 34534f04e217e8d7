//! `POST /dev/token`: a token for any user, for trying natter on a local install. Wired only
//! when `GatewayConfig::dev_tokens` is set, which no config file can do (see its doc).

use serde::{Deserialize, Serialize};
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::{Reply, Response};

use crate::origins::{is_loopback_host, is_loopback_origin};

/// How long a dev token lives.
const DEV_TOKEN_TTL_SECS: u64 = 24 * 3600;

#[derive(Deserialize)]
struct TokenRequest {
    user: String,
}

#[derive(Serialize)]
struct TokenAnswer {
    user: String,
    token: String,
}

/// Answers `{"user":"alice"}` with `{"user":"alice","token":"…"}`. Only a JSON body is
/// accepted, so a page of another origin cannot ask without a CORS preflight, which is
/// never answered.
/// `enabled` is `GatewayConfig::dev_tokens`; tokens are signed with `jwt_secret`.
pub fn routes(enabled: bool, jwt_secret: String) -> BoxedFilter<(Response,)> {
    warp::post()
        .and(warp::path!("dev" / "token"))
        .and_then(move || async move {
            if enabled {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        })
        .untuple_one()
        .and(warp::header::exact_ignore_case(
            "content-type",
            "application/json",
        ))
        .and(warp::header::optional::<String>("host"))
        .and(warp::header::optional::<String>("origin"))
        .and(warp::body::content_length_limit(1024))
        .and(warp::body::json())
        .map(
            move |host: Option<String>, origin: Option<String>, request: TokenRequest| {
                // DNS rebinding: a page of any site can resolve its own name to 127.0.0.1. Its
                // requests still name that site in `Host` and `Origin`, so both must be loopback.
                if !host.as_deref().is_some_and(is_loopback_host)
                    || origin.as_deref().is_some_and(|o| !is_loopback_origin(o))
                {
                    return warp::reply::with_status(
                        "dev tokens are for pages on this machine only",
                        http::StatusCode::FORBIDDEN,
                    )
                    .into_response();
                }
                if protocol::UserId::new(&request.user).is_err() {
                    return warp::reply::with_status(
                        "user must match [A-Za-z0-9_-]{1,64}",
                        http::StatusCode::BAD_REQUEST,
                    )
                    .into_response();
                }
                let token = crate::mint_token(&jwt_secret, &request.user, DEV_TOKEN_TTL_SECS);
                tracing::info!(user = %request.user, "dev token issued");
                warp::reply::json(&TokenAnswer {
                    user: request.user,
                    token,
                })
                .into_response()
            },
        )
        .boxed()
}
