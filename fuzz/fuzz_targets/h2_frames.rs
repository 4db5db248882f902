#![no_main]
//! Every HTTP/2 frame parser must never panic on a stream of arbitrary frames, and every
//! slice it returns must lie within the payload it was given. Header blocks written with
//! `write_headers` / `finish_headers` must reassemble to the block.
use kes::http2::frame::{self, FrameHeader, FRAME_HEADER_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Some(header) = FrameHeader::parse(rest) {
        assert!(header.stream_id < 1 << 31 && header.length < 1 << 24);
        let body = &rest[FRAME_HEADER_BYTES..];
        // A truncated last frame is parsed with what is there.
        let payload = &body[..body.len().min(header.length as usize)];
        let n = payload.len();
        if let Ok(d) = frame::data_payload(&header, payload) {
            assert!(d.len() <= n);
        }
        if let Ok(h) = frame::headers_payload(&header, payload) {
            assert!(h.fragment.len() <= n);
        }
        if let Ok((c, _)) = frame::continuation_payload(&header, payload) {
            assert!(c.len() <= n);
        }
        if let Ok(settings) = frame::settings(&header, payload) {
            assert!(settings.count() <= n / 6);
        }
        if let Ok(g) = frame::goaway(&header, payload) {
            assert!(g.debug_data.len() + 8 == n);
        }
        if let Ok(w) = frame::window_update(&header, payload) {
            assert!(w > 0 && w < 1 << 31);
        }
        let _ = frame::rst_stream(&header, payload);
        let _ = frame::ping(&header, payload);
        let _ = frame::priority(&header, payload);
        for e in [
            frame::data_payload(&header, payload).err(),
            frame::settings(&header, payload).err(),
            frame::window_update(&header, payload).err(),
        ]
        .into_iter()
        .flatten()
        {
            let _ = (e.code(), e.scope());
        }
        // Round trip: the payload as a header block, framed both ways.
        let max = 16_384 + (header.flags as u32) * 3;
        let mut direct = Vec::new();
        frame::write_headers(&mut direct, header.stream_id | 1, payload, true, max);
        let mut in_place = Vec::new();
        let mark = frame::begin_headers(&mut in_place);
        in_place.extend_from_slice(payload);
        frame::finish_headers(&mut in_place, mark, header.stream_id | 1, true, max);
        assert_eq!(direct, in_place);
        let mut block = Vec::new();
        let mut framed = direct.as_slice();
        while let Some(h) = FrameHeader::parse(framed) {
            let end = FRAME_HEADER_BYTES + h.length as usize;
            block.extend_from_slice(&framed[FRAME_HEADER_BYTES..end]);
            framed = &framed[end..];
        }
        assert!(framed.is_empty());
        assert_eq!(block, payload);
        rest = &body[n..];
    }
});
