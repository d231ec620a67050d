//! The console's page and assets, embedded in the binary (no CDN: it works air-gapped).
//! Plain HTML, CSS and JavaScript, with no build step; the sources are in
//! `src/console/assets/`.

use super::response::Response;

const INDEX_HTML: &str = include_str!("../console/assets/index.html");
const CONSOLE_JS: &str = include_str!("../console/assets/console.js");
const CONSOLE_CSS: &str = include_str!("../console/assets/console.css");

/// The asset at `path`, if it is one.
pub(super) fn asset(path: &str) -> Option<Response> {
    let (content_type, body) = match path {
        "/" | "/index.html" => ("text/html; charset=utf-8", INDEX_HTML),
        "/console/console.js" => ("text/javascript; charset=utf-8", CONSOLE_JS),
        "/console/console.css" => ("text/css; charset=utf-8", CONSOLE_CSS),
        _ => return None,
    };
    Some(Response::new(200, content_type, body))
}

/// The embedded assets' total size in bytes (reported in the docs and the closing note).
pub fn embedded_bytes() -> usize {
    INDEX_HTML.len() + CONSOLE_JS.len() + CONSOLE_CSS.len()
}
