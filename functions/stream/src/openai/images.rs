//! Image parts of a user message (`{"type": "image_url", "image_url": {"url", "detail"?}}`): an
//! https URL or a `data:` URI of a PNG, JPEG, GIF or WebP image. The provider receives them
//! whole; what is stored with the turn keeps at most [`STORED_IMAGE_BYTES`] of image data: a
//! larger image is replaced by a placeholder naming its media type, size and SHA-256.

use common::provider::{ImageUrl, Part, decode_data_uri};
use serde_json::{Value, json};

use super::request::{Refusal, bad, unsupported};

/// The most image data (decoded bytes) one stored turn keeps.
pub const STORED_IMAGE_BYTES: usize = 64 * 1024;

/// The media types an image may have.
const MEDIA_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];

/// An `image_url` part, checked: an https URL or a base64 `data:` URI of an image type, and a
/// `detail` of `auto`, `low` or `high`.
pub fn image_part(param: &str, p: &Value) -> Result<Part, Refusal> {
    let at = format!("{param}.image_url");
    let Some(image) = p.get("image_url").and_then(Value::as_object) else {
        return Err(bad(&at, "an image_url part needs its image_url object"));
    };
    let url = match image.get("url") {
        Some(Value::String(u)) => u.clone(),
        _ => return Err(bad(&format!("{at}.url"), "image_url.url must be a string")),
    };
    if url.starts_with("data:") {
        match decode_data_uri(&url) {
            Some((media_type, _)) if MEDIA_TYPES.contains(&media_type) => {}
            Some(_) => {
                return Err(unsupported(
                    &format!("{at}.url"),
                    "an image must be PNG, JPEG, GIF or WebP",
                ));
            }
            None => {
                return Err(bad(
                    &format!("{at}.url"),
                    "a data: URI must be data:<media type>;base64,<data>",
                ));
            }
        }
    } else if !url.starts_with("https://")
        || url.len() <= "https://".len()
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad(
            &format!("{at}.url"),
            "an image is an https URL or a data: URI",
        ));
    }
    let detail = match image.get("detail") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) if matches!(d.as_str(), "auto" | "low" | "high") => Some(d.clone()),
        Some(_) => {
            return Err(bad(
                &format!("{at}.detail"),
                "detail must be auto, low or high",
            ));
        }
    };
    Ok(Part::ImageUrl {
        image_url: ImageUrl { url, detail },
    })
}

/// Keeps the image data of `messages` (in order) within `budget` bytes, in place: a `data:`
/// image that does not fit what is left becomes
/// `{"type": "image_omitted", "media_type", "bytes", "sha256"}`.
pub fn cap_stored(messages: &mut [Value], budget: &mut usize) {
    for m in messages {
        let Some(parts) = m.get_mut("content").and_then(Value::as_array_mut) else {
            continue;
        };
        for part in parts {
            let url = part
                .pointer("/image_url/url")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let Some((media_type, bytes)) = decode_data_uri(url) else {
                continue;
            };
            if bytes.len() <= *budget {
                *budget -= bytes.len();
                continue;
            }
            let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
            let sha256: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
            *part = json!({"type": "image_omitted", "media_type": media_type,
                           "bytes": bytes.len(), "sha256": sha256});
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn data_uri(bytes: usize) -> String {
        let data = base64::engine::general_purpose::STANDARD.encode(vec![7u8; bytes]);
        format!("data:image/png;base64,{data}")
    }

    #[test]
    fn images_are_checked_by_kind_and_type() {
        let ok = |url: &str| image_part("p", &json!({"type":"image_url","image_url":{"url":url}}));
        assert!(ok("https://example.com/cat.png").is_ok());
        assert!(ok(&data_uri(10)).is_ok());
        for (url, code) in [
            ("http://example.com/cat.png", "invalid_value"),
            ("ftp://x", "invalid_value"),
            ("data:image/png;base64,@@@", "invalid_value"),
            ("data:application/pdf;base64,AAAA", "unsupported_value"),
        ] {
            let e = ok(url).unwrap_err().error;
            assert_eq!(
                (e.code.as_deref(), e.param.as_deref()),
                (Some(code), Some("p.image_url.url")),
                "{url}"
            );
        }
    }

    #[test]
    fn stored_images_keep_at_most_the_budget_and_name_what_was_left_out() {
        let mut messages = vec![json!({"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": data_uri(40_000)}},
            {"type": "image_url", "image_url": {"url": data_uri(30_000)}},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        ]})];
        let mut budget = STORED_IMAGE_BYTES;
        cap_stored(&mut messages, &mut budget);
        let parts = messages[0]["content"].as_array().unwrap();
        assert_eq!(parts[1]["type"], "image_url");
        assert_eq!(parts[2]["type"], "image_omitted");
        assert_eq!(parts[2]["media_type"], "image/png");
        assert_eq!(parts[2]["bytes"], 30_000);
        let expected = ring::digest::digest(&ring::digest::SHA256, &[7u8; 30_000]);
        let hex: String = expected
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(parts[2]["sha256"], hex);
        assert_eq!(parts[3]["image_url"]["url"], "https://example.com/a.png");
        assert_eq!(budget, STORED_IMAGE_BYTES - 40_000);
    }
}
