//! The HPACK static table (RFC 7541 Appendix A): 61 fixed fields, indices 1..=61, and the
//! lookups the encoder uses to refer to it.

/// Number of entries in the static table; dynamic indices start after it.
pub const STATIC_ENTRIES: usize = 61;

/// Entries 1..=61 as (name, value); index `i` is `STATIC_TABLE[i - 1]`.
pub const STATIC_TABLE: [(&[u8], &[u8]); STATIC_ENTRIES] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// The entry at 1-based `index`, `None` outside 1..=61.
pub fn get(index: usize) -> Option<(&'static [u8], &'static [u8])> {
    STATIC_TABLE.get(index.checked_sub(1)?).copied()
}

/// The first static index whose name is `name` (lowercase, as HTTP/2 sends it).
pub fn name_index(name: &[u8]) -> Option<usize> {
    // Entries sharing a name are adjacent, so the first match is the lowest index.
    STATIC_TABLE
        .iter()
        .position(|&(n, _)| n == name)
        .map(|i| i + 1)
}

/// The static index of `:status` with this code, for the seven codes the table holds.
pub fn status_index(status: u16) -> Option<usize> {
    Some(match status {
        200 => 8,
        204 => 9,
        206 => 10,
        304 => 11,
        400 => 12,
        404 => 13,
        500 => 14,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_table_lookups() {
        assert_eq!(get(0), None);
        assert_eq!(get(1), Some((&b":authority"[..], &b""[..])));
        assert_eq!(get(61), Some((&b"www-authenticate"[..], &b""[..])));
        assert_eq!(get(62), None);
        assert_eq!(name_index(b":status"), Some(8));
        assert_eq!(name_index(b"content-type"), Some(31));
        assert_eq!(name_index(b"content-length"), Some(28));
        assert_eq!(name_index(b"location"), Some(46));
        assert_eq!(name_index(b"x-unknown"), None);
        for code in [200, 204, 206, 304, 400, 404, 500] {
            let (name, value) = get(status_index(code).unwrap()).unwrap();
            assert_eq!(
                (name, value),
                (&b":status"[..], code.to_string().as_bytes())
            );
        }
        assert_eq!(status_index(201), None);
    }
}
