//! PII redaction: e-mail addresses, card numbers that pass the Luhn check and phone numbers
//! replaced in what is stored and logged.

use regex::Regex;

use super::Flag;

/// Redacts personal data from text before it is stored: e-mail addresses, card numbers that pass
/// the Luhn check, and phone numbers become `[email]`, `[card]`, `[phone]`.
#[derive(Debug, Clone)]
pub struct Redactor {
    email: Regex,
    card: Regex,
    phone: Regex,
}

/// How many of each kind a redaction replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Redacted {
    pub emails: usize,
    pub cards: usize,
    pub phones: usize,
}

impl Redacted {
    pub fn total(&self) -> usize {
        self.emails + self.cards + self.phones
    }

    pub fn add(&mut self, other: Redacted) {
        self.emails += other.emails;
        self.cards += other.cards;
        self.phones += other.phones;
    }

    /// The flag recording this redaction, when anything was redacted.
    pub fn flag(&self) -> Option<Flag> {
        (self.total() > 0).then(|| {
            Flag::new(
                "pii_redaction",
                "redacted",
                format!(
                    "{} email(s), {} card number(s), {} phone number(s)",
                    self.emails, self.cards, self.phones
                ),
            )
        })
    }
}

impl Redactor {
    pub fn new() -> Self {
        let build = |p: &str| {
            Regex::new(p).unwrap_or_else(|_| Regex::new("$^").unwrap_or_else(|_| unreachable!()))
        };
        Self {
            email: build(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
            // A run of up to 25 digits in groups: a card number may be followed by its expiry
            // or CVC in the same run ("4111 1111 1111 1111 12/25"); see `redact`.
            card: build(r"\b\d(?:[ -]?\d){12,24}\b"),
            phone: build(concat!(
                r"(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\b\d{2,4}[\s.-])\d{3,4}[\s.-]\d{3,4}\b",
                // E.164 written without separators: +14155550100.
                r"|\+\d{8,15}\b",
                // A North American number without separators: 4155550100.
                r"|\b[2-9]\d{2}[2-9]\d{6}\b",
            )),
        }
    }

    /// Redacts what a turn keeps from its request, in place: the prompt, the instructions
    /// (`system`, which later turns of its thread inherit) and the earlier messages of a `/v1`
    /// call (every string in them); the answer is redacted as it streams (see [`StoredText`]).
    pub fn redact_request(&self, c: &mut crate::Conversation) -> Redacted {
        let (prompt, mut n) = self.redact(&c.prompt);
        c.prompt = prompt;
        if let Some(system) = &c.system {
            let (clean, m) = self.redact(system);
            c.system = Some(clean);
            n.add(m);
        }
        if let Some(messages) = &mut c.messages {
            n.add(self.redact_json(messages));
        }
        n
    }

    /// Redacts every string of a JSON value in place.
    pub fn redact_json(&self, v: &mut serde_json::Value) -> Redacted {
        use serde_json::Value;
        match v {
            Value::String(s) => {
                let (clean, n) = self.redact(s);
                *s = clean;
                n
            }
            Value::Array(items) => items.iter_mut().fold(Redacted::default(), |mut n, v| {
                n.add(self.redact_json(v));
                n
            }),
            Value::Object(map) => map.values_mut().fold(Redacted::default(), |mut n, v| {
                n.add(self.redact_json(v));
                n
            }),
            _ => Redacted::default(),
        }
    }

    /// `text` with personal data replaced, and what was replaced.
    pub fn redact(&self, text: &str) -> (String, Redacted) {
        let mut counts = Redacted::default();
        let step = self.email.replace_all(text, |_: &regex::Captures<'_>| {
            counts.emails += 1;
            "[email]"
        });
        let step =
            self.card
                .replace_all(&step, |c: &regex::Captures<'_>| match card_prefix(&c[0]) {
                    Some(end) => {
                        counts.cards += 1;
                        format!("[card]{}", &c[0][end..])
                    }
                    None => c[0].to_owned(),
                });
        let phone_input = step.into_owned();
        let step = self
            .phone
            .replace_all(&phone_input, |c: &regex::Captures<'_>| {
                let m = c.get(0).map_or(0..0, |m| m.range());
                // Part of a longer run of digits (a number that failed the card check): keep it.
                if digit_near(&phone_input[..m.start], true)
                    || digit_near(&phone_input[m.end..], false)
                {
                    return c[0].to_owned();
                }
                counts.phones += 1;
                "[phone]".to_owned()
            });
        (step.into_owned(), counts)
    }
}

/// The end (byte index) of the longest card number at the start of a run of digit groups: 13 to
/// 19 digits that pass the Luhn check and end where a group ends (so a run holding a card and
/// its expiry or CVC redacts the card). `None` when no prefix is a card number.
fn card_prefix(run: &str) -> Option<usize> {
    let mut ends = Vec::new();
    let mut digits = 0;
    for (i, c) in run.char_indices() {
        if c.is_ascii_digit() {
            digits += 1;
            let next = run[i + 1..].chars().next();
            if (13..=19).contains(&digits) && next.is_none_or(|n| !n.is_ascii_digit()) {
                ends.push(i + 1);
            }
        }
    }
    ends.into_iter().rev().find(|&end| luhn(&run[..end]))
}

impl Default for Redactor {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether a digit touches this side of a match, directly or across one separator.
fn digit_near(side: &str, before: bool) -> bool {
    let mut chars: Box<dyn Iterator<Item = char>> = if before {
        Box::new(side.chars().rev())
    } else {
        Box::new(side.chars())
    };
    match chars.next() {
        Some(c) if c.is_ascii_digit() => true,
        Some(' ' | '-' | '.') => chars.next().is_some_and(|c| c.is_ascii_digit()),
        _ => false,
    }
}

/// The Luhn checksum of the digits in `s` (13 to 19 of them).
pub fn luhn(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let d2 = d * 2;
                if d2 > 9 { d2 - 9 } else { d2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_valid_cards_and_phones_are_redacted_and_counted() {
        let r = Redactor::new();
        let (out, n) = r.redact(
            "mail jane.doe+x@example.co.uk, card 4111 1111 1111 1111, not a card \
             4111 1111 1111 1112, call +1 415-555-0100 or (020) 7946 0958; order 12345.",
        );
        assert_eq!(
            out,
            "mail [email], card [card], not a card 4111 1111 1111 1112, call [phone] or \
             [phone]; order 12345."
        );
        assert_eq!(
            n,
            Redacted {
                emails: 1,
                cards: 1,
                phones: 2
            }
        );
        assert_eq!(n.flag().unwrap().check, "pii_redaction");
        let (same, none) = r.redact("nothing personal here, version 1.2.3, year 2024");
        assert_eq!(same, "nothing personal here, version 1.2.3, year 2024");
        assert!(none.flag().is_none());
    }

    #[test]
    fn cards_with_expiry_or_cvc_and_compact_phones_are_redacted() {
        let r = Redactor::new();
        for (input, expected) in [
            ("pay 4111 1111 1111 1111 12/25 now", "pay [card] 12/25 now"),
            ("pay 4111-1111-1111-1111 123 now", "pay [card] 123 now"),
            ("call +14155550100 today", "call [phone] today"),
            ("call 4155550100 today", "call [phone] today"),
        ] {
            assert_eq!(r.redact(input).0, expected, "{input}");
        }
        // Numbers that are not personal data stay.
        for kept in [
            "unix time 1700000000",
            "order 12345",
            "version 1.2.3",
            "id 0123456789",
        ] {
            assert_eq!(r.redact(kept).0, kept);
        }
    }

    #[test]
    fn luhn_accepts_real_test_numbers_only() {
        assert!(luhn("4111111111111111"));
        assert!(luhn("5500 0000 0000 0004"));
        assert!(!luhn("4111111111111112"));
        assert!(!luhn("1234"));
    }
}
