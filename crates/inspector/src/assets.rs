//! The page, embedded in the binary: one HTML file, one script, one style sheet, and the
//! sign-in page. No build step, nothing fetched from elsewhere.

/// The inspector page.
pub const INDEX: &str = include_str!("assets/index.html");
/// Its script.
pub const SCRIPT: &str = include_str!("assets/inspector.js");
/// Its style sheet.
pub const STYLE: &str = include_str!("assets/inspector.css");
/// The sign-in page; `<!--message-->` is where a message goes.
const LOGIN: &str = include_str!("assets/login.html");

/// The sign-in page, with `message` (plain text, escaped here) above the form.
pub fn login(message: &str) -> String {
    let mut escaped = String::with_capacity(message.len());
    for c in message.chars() {
        match c {
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '&' => escaped.push_str("&amp;"),
            '"' => escaped.push_str("&quot;"),
            c => escaped.push(c),
        }
    }
    let message = if escaped.is_empty() {
        String::new()
    } else {
        format!("<p class=\"problem\" role=\"alert\">{escaped}</p>")
    };
    LOGIN.replace("<!--message-->", &message)
}

/// The asset at `path` and its `Content-Type`, if there is one.
pub fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/" | "/index.html" => Some((INDEX, "text/html; charset=utf-8")),
        "/inspector.js" => Some((SCRIPT, "text/javascript; charset=utf-8")),
        "/inspector.css" => Some((STYLE, "text/css; charset=utf-8")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_assets() {
        assert!(INDEX.contains("src=\"/inspector.js\""));
        assert!(INDEX.contains("href=\"/inspector.css\""));
        for text in [INDEX, SCRIPT, STYLE, LOGIN] {
            // The SVG namespace is a name, not an address anything is fetched from.
            let text = text.replace("http://www.w3.org/2000/svg", "");
            assert!(
                !text.contains("http://") && !text.contains("https://") && !text.contains("//cdn"),
                "nothing from elsewhere"
            );
        }
        assert!(
            !INDEX.contains("<script>"),
            "no inline script (the CSP forbids it)"
        );
    }

    #[test]
    fn the_login_message_is_escaped() {
        let page = login("<b>wrong</b>");
        assert!(page.contains("&lt;b&gt;wrong&lt;/b&gt;"));
        assert!(!login("").contains("problem"));
    }
}
