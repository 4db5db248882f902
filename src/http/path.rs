//! Go's `path.Clean` as `http.ServeMux` applies it: non-canonical paths are redirected.

/// `Some(cleaned)` if `path` is not canonical (`//`, `/./`, `/../`, a trailing `/.`), keeping a
/// trailing `/` of the original; `None` if it is already clean.
pub fn clean_path(path: &str) -> Option<String> {
    let mut cleaned = clean(path);
    if path.ends_with('/') && cleaned != "/" {
        cleaned.push('/');
    }
    (cleaned != path).then_some(cleaned)
}

fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    for p in &parts {
        out.push('/');
        out.push_str(p);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases = [
            ("/v1//key", Some("/v1/key")),
            ("/v1/./key/", Some("/v1/key/")),
            ("/a/../b", Some("/b")),
            ("/v1/key/list/", None),
            ("/version", None),
            ("/", None),
            ("/..", Some("/")),
            ("//", Some("/")),
            ("/a/.", Some("/a")),
            ("/v1/key/list//", Some("/v1/key/list/")),
            ("", Some("/")),
        ];
        for (input, want) in cases {
            assert_eq!(clean_path(input).as_deref(), want, "{input:?}");
        }
    }
}
