//! An answer's stored text as it streams: redacted piece by piece, holding back a tail a match
//! may still reach, so that positions in it never move.

use super::{Redacted, Redactor};

/// An answer's stored text, built as the answer arrives. Without a redactor every piece is
/// stored as it comes. With one, text is stored only up to a point no personal-data match can
/// reach across: a trailing word or run of digits that may still grow (an e-mail address, a
/// number cut at a chunk's edge) is held back until what follows settles it, at most
/// [`HOLD_BACK_CHARS`] characters. Each stored piece is redacted on its own, so what is stored
/// only ever grows at its end: positions in it are stable.
#[derive(Debug, Default)]
pub struct StoredText {
    redactor: Option<std::sync::Arc<Redactor>>,
    pending: String,
    chars: usize,
    counts: Redacted,
}

/// The most a stored text holds back, in characters.
pub const HOLD_BACK_CHARS: usize = 256;

impl StoredText {
    pub fn new(redactor: Option<std::sync::Arc<Redactor>>) -> Self {
        Self {
            redactor,
            ..Self::default()
        }
    }

    /// Takes the next piece of the answer; returns the text now stored (maybe empty).
    pub fn push(&mut self, raw: &str) -> String {
        let Some(redactor) = self.redactor.clone() else {
            self.chars += raw.chars().count();
            return raw.to_owned();
        };
        self.pending.push_str(raw);
        let end = safe_end(&self.pending);
        if end == 0 {
            return String::new();
        }
        let rest = self.pending.split_off(end);
        let piece = std::mem::replace(&mut self.pending, rest);
        self.store(&redactor, &piece)
    }

    /// Stores whatever is held back: the answer has ended.
    pub fn finish(&mut self) -> String {
        let piece = std::mem::take(&mut self.pending);
        match self.redactor.clone() {
            Some(r) if !piece.is_empty() => self.store(&r, &piece),
            _ => piece,
        }
    }

    /// How many characters are stored so far.
    pub fn chars(&self) -> usize {
        self.chars
    }

    /// What the redaction replaced so far.
    pub fn redacted(&self) -> Redacted {
        self.counts
    }

    fn store(&mut self, redactor: &Redactor, piece: &str) -> String {
        let (clean, n) = redactor.redact(piece);
        self.counts.add(n);
        self.chars += clean.chars().count();
        clean
    }
}

/// Where the safe part of `pending` ends (a byte index): before an unfinished last word (no
/// whitespace after it yet), and never right after a run of characters a number can hold
/// (digits, whitespace, `+-.()/`) that has a digit in it; never more than [`HOLD_BACK_CHARS`]
/// back from the end.
fn safe_end(pending: &str) -> usize {
    let mut end = pending.len();
    if !pending.ends_with(char::is_whitespace) {
        end = pending
            .char_indices()
            .rev()
            .find(|(_, c)| c.is_whitespace())
            .map_or(0, |(i, c)| i + c.len_utf8());
    }
    let numeric = |c: char| c.is_ascii_digit() || c.is_whitespace() || "+-.()/".contains(c);
    let run_start = pending[..end]
        .char_indices()
        .rev()
        .take_while(|(_, c)| numeric(*c))
        .last()
        .map_or(end, |(i, _)| i);
    if pending[run_start..end].contains(|c: char| c.is_ascii_digit()) {
        end = run_start;
    }
    let floor = pending
        .char_indices()
        .rev()
        .nth(HOLD_BACK_CHARS - 1)
        .map_or(0, |(i, _)| i);
    end.max(floor)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stores `raw` through a stored text in `pieces`-sized chunks, returning every prefix that
    /// was stored along the way and the whole.
    fn store_in_pieces(raw: &str, piece: usize) -> (Vec<String>, String) {
        let mut stored = StoredText::new(Some(std::sync::Arc::new(Redactor::new())));
        let mut whole = String::new();
        let mut prefixes = Vec::new();
        let chars: Vec<char> = raw.chars().collect();
        for c in chars.chunks(piece) {
            whole.push_str(&stored.push(&c.iter().collect::<String>()));
            prefixes.push(whole.clone());
        }
        whole.push_str(&stored.finish());
        assert_eq!(stored.chars(), whole.chars().count());
        (prefixes, whole)
    }

    #[test]
    fn stored_text_never_keeps_a_number_cut_at_a_chunk_edge() {
        let raw = "Card 4111 1111 1111 1111, phone +1 415-555-0100, mail jane@example.com, \
                   and 4155550100. Done.";
        for piece in [1, 2, 3, 5, 7, 11, 64] {
            let (prefixes, whole) = store_in_pieces(raw, piece);
            assert_eq!(
                whole, "Card [card], phone [phone], mail [email], and [phone]. Done.",
                "piece {piece}"
            );
            for p in prefixes {
                assert!(
                    whole.starts_with(&p),
                    "{p:?} is not a prefix (piece {piece})"
                );
                for digits in ["4111", "1111", "555", "0100", "jane"] {
                    assert!(!p.contains(digits), "{p:?} holds {digits} (piece {piece})");
                }
            }
        }
        let mut plain = StoredText::new(None);
        assert_eq!(plain.push("4111 "), "4111 ");
        assert_eq!(plain.chars(), 5);
    }
}
