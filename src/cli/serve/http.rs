//! `serve`'s HTTP routes (axum): the page, the JSON API and thumbnails from the image root.
//!
//! - `GET /`: the search page.
//! - `GET /api/info`: the index and device, as JSON.
//! - `POST /api/search`: a multipart form with an `image` file, or JSON `{"path": ...}` naming
//!   an image under the root; both take `top` and `k` (a number or `all`). Answers as
//!   `crosspool search --json` does, each hit with its thumbnail's URL when it lies under the
//!   root.
//! - `GET /thumb/{path}`: a JPEG of at most [`THUMB_SIDE`] pixels a side of a file under the
//!   root.

use super::files::{ImageRoot, Refusal};
use super::service::{Answer, IndexInfo, NotTaken, Query, Service};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use crosspool::input::{EncodedImage, ImageSource};
use serde_json::json;
use std::sync::Arc;

/// The page, one file with its script and style.
const PAGE: &str = include_str!("page.html");

/// Longest side of a thumbnail, in pixels.
pub const THUMB_SIDE: u32 = 320;

/// Results a query may ask for at most.
const MAX_TOP: usize = 1000;

/// What every handler shares.
pub struct AppState {
    pub service: Service,
    pub info: IndexInfo,
    pub images: Option<ImageRoot>,
    /// The `top` of a query that names none.
    pub default_top: usize,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// Files read and thumbnails decoded at once at most: each may take up to the decode
    /// limit's memory, so a burst of requests waits here instead of decoding all together.
    pub file_work: tokio::sync::Semaphore,
    /// See [`RequestSlots`].
    pub requests: RequestSlots,
}

/// Search requests in the server at once (`--queue`), bodies included: more are answered
/// busy before their bodies are read, so memory stays under `--queue` x `--max-upload-mib`.
pub type RequestSlots = tokio::sync::Semaphore;

/// [`AppState::file_work`]'s permits.
pub const FILE_WORK: usize = 4;

/// The routes, with request bodies bounded by the state's `max_body` bytes.
pub fn router(state: Arc<AppState>) -> Router {
    let max_body = state.max_body;
    Router::new()
        .route("/", get(page))
        .route("/api/info", get(info))
        .route("/api/search", post(search))
        .route("/thumb/{*path}", get(thumbnail))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// An error answer: the status and `{"error": message}`.
fn refuse(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn info(State(app): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let mut v = serde_json::to_value(&app.info).unwrap_or_default();
    v["thumbnails"] = json!(app.images.is_some());
    Json(v)
}

/// A search request's fields, from either body.
#[derive(Default)]
struct SearchForm {
    image: Option<(String, Vec<u8>)>,
    path: Option<String>,
    top: Option<String>,
    k: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonQuery {
    path: String,
    #[serde(default)]
    top: Option<serde_json::Value>,
    #[serde(default)]
    k: Option<serde_json::Value>,
}

async fn search(State(app): State<Arc<AppState>>, req: Request) -> Response {
    let Ok(_slot) = app.requests.try_acquire() else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy: too many queries in the server; try again",
        );
    };
    // A body announced too long is refused before it is read (one sent without a length is
    // cut off at the limit as it is read).
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(n) = announced.filter(|&n| n > app.max_body as u64) {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request is {n} bytes, over the limit of {} (serve --max-upload-mib)",
                app.max_body
            ),
        );
    }
    let form = match read_form(req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let top = match form.top.as_deref().map(str::trim) {
        None | Some("") => app.default_top,
        Some(t) => match t.parse::<usize>() {
            Ok(n) if (1..=MAX_TOP).contains(&n) => n,
            _ => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    format!("top must be a number from 1 to {MAX_TOP}, not '{t}'"),
                )
            }
        },
    };
    let channels = match form.k.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(k) if k.eq_ignore_ascii_case("all") => Some(None),
        Some(k) => match k.parse::<usize>() {
            Ok(n) if n > 0 => Some(Some(n)),
            _ => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    format!("k must be a positive number of channels or 'all', not '{k}'"),
                )
            }
        },
    };
    if matches!(channels, Some(Some(_))) && !app.info.selectable {
        return refuse(
            StatusCode::BAD_REQUEST,
            "this index is not cross-layer, so channels cannot be selected; use k=all",
        );
    }
    let image = match (form.image, form.path) {
        (Some((name, bytes)), None) => {
            if bytes.is_empty() {
                return refuse(StatusCode::BAD_REQUEST, "the uploaded image is empty");
            }
            ImageSource::Encoded(Arc::new(EncodedImage { name, bytes }))
        }
        (None, Some(path)) => {
            let Some(root) = &app.images else {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "queries by path need an image root (serve --images DIR); upload the image instead",
                );
            };
            let file = match root.resolve(&path) {
                Ok(p) => p,
                Err(r) => return refuse(refusal_status(&r), r.message()),
            };
            // Read here and named as the client named it: the answer does not show where
            // the root lies on the server.
            let cap = crosspool::input::DecodeLimits::default().max_file_bytes;
            let Ok(_permit) = app.file_work.acquire().await else {
                return refuse(StatusCode::INTERNAL_SERVER_ERROR, "the server is stopping");
            };
            match tokio::task::spawn_blocking(move || crosspool::input::read_capped(&file, cap))
                .await
            {
                Ok(Ok(bytes)) => ImageSource::Encoded(Arc::new(EncodedImage { name: path, bytes })),
                Ok(Err(e)) => return refuse(StatusCode::UNPROCESSABLE_ENTITY, e),
                Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, e),
            }
        }
        (Some(_), Some(_)) => {
            return refuse(StatusCode::BAD_REQUEST, "give an image or a path, not both")
        }
        (None, None) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "no query: send a multipart form with an 'image' file, or JSON {\"path\": ...}",
            )
        }
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let query = Query {
        image,
        channels,
        top,
        reply,
    };
    match app.service.submit(query) {
        Ok(()) => {}
        Err(NotTaken::Busy) => {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy: too many queries waiting; try again",
            )
        }
        Err(NotTaken::Stopped) => {
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the search service stopped",
            )
        }
    }
    let Answer { result, paths } = match answer.await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(_) => {
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the search service stopped",
            )
        }
    };
    match result.outcome {
        Ok(ranking) => {
            let results: Vec<_> = ranking
                .hits
                .iter()
                .zip(&paths)
                .enumerate()
                .map(|(r, (&(_, score), path))| {
                    let thumb = app
                        .images
                        .as_ref()
                        .and_then(|root| root.url_path(path))
                        .map(|u| format!("/thumb/{u}"));
                    json!({"rank": r + 1, "path": path, "score": score, "thumbnail": thumb})
                })
                .collect();
            Json(json!({
                "query": result.name,
                "channels": ranking.channels,
                "device": app.info.device,
                "results": results,
            }))
            .into_response()
        }
        Err(reason) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"query": result.name, "error": reason})),
        )
            .into_response(),
    }
}

/// The fields of a multipart form or a JSON body.
async fn read_form(req: Request) -> Result<SearchForm, Response> {
    let kind = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if kind.starts_with("application/json") {
        let Json(q) = Json::<JsonQuery>::from_request(req, &())
            .await
            .map_err(|e| refuse(e.status(), e.body_text()))?;
        let text = |v: Option<serde_json::Value>| {
            v.map(|v| match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            })
        };
        return Ok(SearchForm {
            image: None,
            path: Some(q.path),
            top: text(q.top),
            k: text(q.k),
        });
    }
    if !kind.starts_with("multipart/form-data") {
        return Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send multipart/form-data with an 'image' file, or application/json with a 'path'",
        ));
    }
    let mut parts = Multipart::from_request(req, &())
        .await
        .map_err(|e| refuse(e.status(), e.body_text()))?;
    let mut form = SearchForm::default();
    loop {
        let field = match parts.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(refuse(e.status(), e.body_text())),
        };
        let name = field.name().unwrap_or("").to_string();
        let file_name = field.file_name().map(str::to_string);
        let bytes = field
            .bytes()
            .await
            .map_err(|e| refuse(e.status(), e.body_text()))?;
        let text = || String::from_utf8_lossy(&bytes).into_owned();
        match name.as_str() {
            "image" => {
                let name = file_name
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| "upload".into());
                form.image = Some((name, bytes.to_vec()));
            }
            "path" => form.path = Some(text()),
            "top" => form.top = Some(text()),
            "k" => form.k = Some(text()),
            other => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    format!("unknown form field '{other}' (image, path, top, k)"),
                ))
            }
        }
    }
    Ok(form)
}

fn refusal_status(r: &Refusal) -> StatusCode {
    match r {
        Refusal::NotRelative | Refusal::Outside => StatusCode::FORBIDDEN,
        Refusal::Missing => StatusCode::NOT_FOUND,
    }
}

async fn thumbnail(State(app): State<Arc<AppState>>, Path(path): Path<String>) -> Response {
    let Some(root) = &app.images else {
        return refuse(StatusCode::NOT_FOUND, "no image root (serve --images DIR)");
    };
    let file = match root.resolve(&path) {
        Ok(f) => f,
        Err(r) => return refuse(refusal_status(&r), r.message()),
    };
    let Ok(_permit) = app.file_work.acquire().await else {
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, "the server is stopping");
    };
    match tokio::task::spawn_blocking(move || thumbnail_jpeg(&file)).await {
        Ok(Ok(jpeg)) => (
            [
                (header::CONTENT_TYPE, "image/jpeg"),
                (header::CACHE_CONTROL, "max-age=3600"),
            ],
            jpeg,
        )
            .into_response(),
        Ok(Err(e)) => refuse(StatusCode::UNPROCESSABLE_ENTITY, e),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// A JPEG of `file` scaled to fit [`THUMB_SIDE`], decoded under the same pixel limit as
/// extraction's.
fn thumbnail_jpeg(file: &std::path::Path) -> Result<Vec<u8>, String> {
    let mut reader = image::ImageReader::open(file)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let bounds = crosspool::input::DecodeLimits::default();
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(bounds.max_side);
    limits.max_image_height = Some(bounds.max_side);
    limits.max_alloc = Some(bounds.max_alloc);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let rgb = img.thumbnail(THUMB_SIDE, THUMB_SIDE).to_rgb8();
    let mut out = std::io::Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode_image(&rgb)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(out.into_inner())
}
