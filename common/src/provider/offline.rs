//! The offline provider: deterministic answers in word-sized chunks, no network, no key.
//! A product feature for demos, development and load tests.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream;

use super::{Chunk, ChunkStream, CompletionRequest, Provider, ProviderError};
use crate::domain::Usage;

/// Answers every prompt by restating it, a word per chunk, `delay` apart.
pub struct OfflineProvider {
    model: String,
    delay: Duration,
}

impl OfflineProvider {
    pub fn new(model: String, delay: Duration) -> Self {
        Self { model, delay }
    }

    /// The full answer to `prompt`.
    pub fn answer(prompt: &str) -> String {
        let words: Vec<&str> = prompt.split_whitespace().take(64).collect();
        format!(
            "You asked: \"{}\". This answer comes from the built-in offline provider, which \
             needs no network and no key, and streams one word at a time. Set \
             LLM_PROVIDER=openai and OPENAI_BASE_URL to talk to a real model.",
            words.join(" ")
        )
    }

    /// The answer split into word-sized chunks, each keeping its trailing space.
    pub fn chunks(prompt: &str) -> Vec<String> {
        Self::answer(prompt)
            .split_inclusive(' ')
            .map(str::to_owned)
            .collect()
    }
}

#[async_trait]
impl Provider for OfflineProvider {
    fn name(&self) -> &'static str {
        "offline"
    }

    fn default_model(&self) -> &str {
        &self.model
    }

    async fn stream(&self, request: CompletionRequest) -> Result<ChunkStream, ProviderError> {
        let prompt = request.last_user_text();
        let mut chunks = Self::chunks(&prompt);
        let mut reason = "stop";
        if let Some(max) = request.max_tokens.map(|m| m as usize)
            && chunks.len() > max
        {
            chunks.truncate(max);
            reason = "length";
        }
        let usage = Usage {
            prompt_tokens: i32::try_from(
                request
                    .messages
                    .iter()
                    .map(|m| m.content.text().split_whitespace().count())
                    .sum::<usize>(),
            )
            .ok(),
            completion_tokens: i32::try_from(chunks.len()).ok(),
            total_tokens: None,
        };
        let usage = Usage {
            total_tokens: usage
                .prompt_tokens
                .zip(usage.completion_tokens)
                .map(|(a, b)| a.saturating_add(b)),
            ..usage
        };
        let delay = self.delay;
        let items = chunks
            .into_iter()
            .map(Chunk::Text)
            .chain(std::iter::once(Chunk::Finish {
                reason: Some(reason.to_owned()),
                usage: Some(usage),
                raw_reason: None,
            }));
        let s = stream::unfold((items, true), move |(mut items, first)| async move {
            let item = items.next()?;
            if !first && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Some((Ok(item), (items, false)))
        });
        Ok(Box::pin(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn request(prompt: &str, max_tokens: Option<u32>) -> CompletionRequest {
        CompletionRequest {
            max_tokens,
            ..CompletionRequest::prompt(prompt, "m")
        }
    }

    #[tokio::test]
    async fn offline_answers_are_deterministic_and_end_with_finish() {
        let p = OfflineProvider::new("m".into(), Duration::ZERO);
        let items: Vec<_> = p
            .stream(request("hello there", None))
            .await
            .unwrap()
            .collect()
            .await;
        let text: String = items
            .iter()
            .filter_map(|i| match i {
                Ok(Chunk::Text(t)) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, OfflineProvider::answer("hello there"));
        assert!(items.len() > 5);
        assert!(matches!(items.last(), Some(Ok(Chunk::Finish { .. }))));
    }

    #[tokio::test]
    async fn max_tokens_cuts_the_answer_with_reason_length() {
        let p = OfflineProvider::new("m".into(), Duration::ZERO);
        let items: Vec<_> = p
            .stream(request("hi", Some(3)))
            .await
            .unwrap()
            .collect()
            .await;
        assert_eq!(items.len(), 4);
        assert!(matches!(
            items.last(),
            Some(Ok(Chunk::Finish { reason: Some(r), .. })) if r == "length"
        ));
    }
}
