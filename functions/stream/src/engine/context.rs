//! What a new turn continues, and what the provider receives: the turns along the chain from
//! the first, oldest first, as user and assistant messages, within `MAX_CONTEXT_CHARS` (older
//! turns are dropped first; the system message and the new prompt are always sent), with the
//! system message first.

use common::ApiError;
use common::Status;
use common::provider::{Message, Role};
use common::store::{ChainTurn, ConversationChain};
use uuid::Uuid;

/// A new turn's place in its thread and the messages the provider receives.
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    /// System message (if any), the previous turns' prompts and answers, the new prompt.
    pub messages: Vec<Message>,
    /// `None` for a first turn (its thread is its own id).
    pub thread_id: Option<Uuid>,
    pub previous_id: Option<Uuid>,
    /// The instructions the turn runs under: its own, or the nearest ones up its chain.
    pub system: Option<String>,
    /// How many previous turns are sent.
    pub turns: usize,
}

/// The context of a turn with `prompt` and `system` (an empty one: none, and none inherited)
/// continuing `previous_id` of `owner`. A previous turn that is not the caller's is a 404; one
/// still running, or ended without any answer, a 409 `previous_not_usable`.
pub async fn load(
    store: &dyn ConversationChain,
    owner: &str,
    prompt: &str,
    system: Option<&str>,
    previous_id: Option<Uuid>,
    max_chars: usize,
) -> Result<Context, ApiError> {
    let own_system = system.map(|s| (!s.is_empty()).then(|| s.to_owned()));
    let Some(previous_id) = previous_id else {
        let system = own_system.flatten();
        return Ok(Context {
            messages: messages(system.as_deref(), &[], prompt),
            thread_id: None,
            previous_id: None,
            system,
            turns: 0,
        });
    };
    let prompt_chars = prompt.chars().count();
    // An upper bound: the inherited instructions' length is known only once read.
    let budget = max_chars.saturating_sub(prompt_chars);
    // A turn whose `start` named it moments ago may not have its row yet.
    let budget_chars = i64::try_from(budget).unwrap_or(i64::MAX);
    let chain = common::young::awaiting_row(previous_id, || {
        store.chain(owner, previous_id, budget_chars)
    })
    .await?
    .ok_or(ApiError::NotFound("no turn of yours has this previous_id"))?;
    let previous = &chain[0];
    usable(previous)?;
    let system = own_system.unwrap_or_else(|| previous.system.clone());
    let budget = budget.saturating_sub(system.as_deref().map_or(0, |s| s.chars().count()));
    let mut kept = Vec::new();
    let mut used = 0usize;
    for turn in &chain {
        let size = turn.prompt.chars().count() + turn.response.chars().count();
        if used + size > budget {
            break;
        }
        used += size;
        kept.push(turn.clone());
    }
    kept.reverse();
    Ok(Context {
        messages: messages(system.as_deref(), &kept, prompt),
        thread_id: Some(previous.thread_id),
        previous_id: Some(previous.id),
        system,
        turns: kept.len(),
    })
}

/// A previous turn can be continued once it has ended with some answer (or ended partial or
/// cancelled with text: that text is what the provider sees).
fn usable(turn: &ChainTurn) -> Result<(), ApiError> {
    let why = match turn.status {
        Status::Streaming => "the previous turn is still running: wait for its end, or cancel it",
        Status::Failed | Status::Blocked | Status::Cancelled | Status::Partial
            if turn.response.is_empty() =>
        {
            "the previous turn has no answer to continue from"
        }
        _ => return Ok(()),
    };
    Err(ApiError::Conflict {
        code: "previous_not_usable",
        message: why.to_owned(),
    })
}

fn messages(system: Option<&str>, turns: &[ChainTurn], prompt: &str) -> Vec<Message> {
    let mut out = Vec::with_capacity(turns.len() * 2 + 2);
    if let Some(system) = system {
        out.push(Message::new(Role::System, system));
    }
    for turn in turns {
        out.push(Message::new(Role::User, turn.prompt.clone()));
        if !turn.response.is_empty() {
            out.push(Message::new(Role::Assistant, turn.response.clone()));
        }
    }
    out.push(Message::new(Role::User, prompt));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(i: usize, status: Status, response: &str, system: Option<&str>) -> ChainTurn {
        ChainTurn {
            id: Uuid::now_v7(),
            thread_id: Uuid::nil(),
            prompt: format!("q{i}"),
            response: response.to_owned(),
            status,
            system: system.map(str::to_owned),
        }
    }

    #[test]
    fn only_ended_turns_with_an_answer_can_be_continued() {
        assert!(usable(&turn(0, Status::Complete, "a", None)).is_ok());
        assert!(usable(&turn(0, Status::Partial, "a", None)).is_ok());
        assert!(usable(&turn(0, Status::Cancelled, "a", None)).is_ok());
        for s in [
            Status::Streaming,
            Status::Failed,
            Status::Blocked,
            Status::Cancelled,
        ] {
            let err = usable(&turn(0, s, "", None)).unwrap_err();
            assert_eq!(
                (err.status().as_u16(), err.code()),
                (409, "previous_not_usable")
            );
        }
        assert!(usable(&turn(0, Status::Streaming, "so far", None)).is_err());
    }

    #[test]
    fn messages_are_system_then_turns_then_the_prompt() {
        let turns = [
            turn(0, Status::Complete, "a0", None),
            turn(1, Status::Complete, "a1", None),
        ];
        let m = messages(Some("sys"), &turns, "new");
        let got: Vec<(Role, String)> = m.iter().map(|m| (m.role, m.content.text())).collect();
        assert_eq!(
            got,
            [
                (Role::System, "sys".into()),
                (Role::User, "q0".into()),
                (Role::Assistant, "a0".into()),
                (Role::User, "q1".into()),
                (Role::Assistant, "a1".into()),
                (Role::User, "new".into()),
            ]
        );
    }
}
