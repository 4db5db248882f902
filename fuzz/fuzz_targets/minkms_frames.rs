#![no_main]
//! MinKMS request bodies: the frame splitter and every request message decoder never
//! panic; a body that splits is exactly its frames, and every field lies inside its message.
use kes::api::minkms::frame::{self, FRAME_HEADER_BYTES};
use kes::api::minkms::message::{self, KeyLayout, KeyRequest};
use kes::api::proto;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(frames) = frame::split(data) else { return };
    assert!(frames.len() <= frame::FRAMES_PER_REQUEST_MAX);
    let total: usize = frames.iter().map(|f| FRAME_HEADER_BYTES + f.message.len()).sum();
    assert_eq!(total, data.len());
    for f in frames {
        let m = f.message;
        let mut fields_len = 0;
        for field in proto::fields(m) {
            let Ok((_, value)) = field else { break };
            if let proto::Value::Bytes(b) = value {
                fields_len += b.len();
            }
        }
        assert!(fields_len <= m.len());
        let _ = message::CreateKey::decode(m);
        let _ = message::ImportKey::decode(m);
        let _ = message::List::decode(m);
        let _ = message::decode_enclave_name(m);
        for layout in [
            KeyLayout::Status,
            KeyLayout::Delete,
            KeyLayout::Encrypt,
            KeyLayout::Decrypt,
            KeyLayout::Generate,
            KeyLayout::Mac,
        ] {
            if let Ok(r) = KeyRequest::decode(layout, m) {
                assert!(r.name.len() + r.data.len() + r.associated_data.len() <= m.len());
            }
        }
    }
});
