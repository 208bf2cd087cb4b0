//! The optional grounding check (`GROUNDING_CHECK=true`): one more short provider call per
//! complete answer, whose one-word verdict becomes a flag.

use common::error::error_chain;
use common::guard::Flag;
use common::provider::{Chunk, CompletionRequest, ProviderError};
use futures_util::StreamExt;

use crate::engine::StreamState;

/// Asks the provider whether `answer` is supported by the prompt: a `grounding` flag with
/// verdict `supported`, `unsupported` or `unknown` (no clear answer, or the judge failed).
pub(super) async fn grounding(state: &StreamState, asked: CompletionRequest, answer: &str) -> Flag {
    let judge = format!(
        "You check answers for grounding. Reply with one word, yes or no: is every claim in \
         the ANSWER supported by the PROMPT or common knowledge?\n\nPROMPT:\n{}\n\nANSWER:\n{}",
        asked.last_user_text(),
        answer
    );
    let request = CompletionRequest {
        max_tokens: Some(5),
        temperature: Some(0.0),
        ..CompletionRequest::prompt(judge, asked.model)
    };
    let judged = async {
        let mut stream = state.provider.stream(request).await?;
        let mut text = String::new();
        while let Some(item) = stream.next().await {
            match item? {
                Chunk::Text(t) => text.push_str(&t),
                Chunk::Finish { .. } => break,
                Chunk::ToolCall(_) | Chunk::Logprobs(_) => {}
            }
        }
        Ok::<_, ProviderError>(text)
    };
    let verdict = match tokio::time::timeout(state.limits.first_chunk_timeout, judged).await {
        Ok(Ok(text)) => {
            let word = text.trim().to_ascii_lowercase();
            if word.starts_with("yes") {
                "supported"
            } else if word.starts_with("no") {
                "unsupported"
            } else {
                "unknown"
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %error_chain(&e), "grounding check failed");
            "unknown"
        }
        Err(_) => "unknown",
    };
    Flag {
        check: "grounding".into(),
        verdict: verdict.into(),
        detail: "judged by the provider".into(),
    }
}
