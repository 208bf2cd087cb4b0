//! The OpenAPI document of the whole service, generated from the handlers' annotations and the
//! types they read and write. Served at `GET /openapi.json`; committed as `openapi.json`
//! (`make openapi` rewrites it; a test fails when the two differ).

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::schema::{Object, SchemaType, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{RefOr, Schema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "llm-stream",
        description = "Streams LLM answers as server-sent events and keeps every conversation \
            in PostgreSQL. Every error body is `{\"error\": {\"code\", \"message\"}}`; unknown \
            paths answer 404 and unknown methods 405 with that body. With `AUTH=required` every \
            path but `/health`, `/openapi.json` and the playground (`/`, `/playground/...`) \
            needs `Authorization: Bearer <key>`.",
        license(name = "MIT")
    ),
    paths(
        stream::native::stream,
        stream::native::resume::resume,
        stream::native::resume::cancel,
        stream::openai::chat,
        stream::openai::models,
        stream::openai::one_model,
        stream::responses::create,
        stream::responses::retrieve,
        stream::responses::cancel,
        stream::responses::delete,
        stream::responses::input_items,
        stream::export::export,
        history::history,
        history::delete_one,
        history::threads::list,
        history::threads::one,
        history::threads::delete,
        history::usage::usage,
        get::get_one,
        search::search,
        common::http::health,
        history::playground::page_handler,
        history::playground::file,
    ),
    modifiers(&BearerKey),
    security(("bearer" = [])),
    tags(
        (name = "stream", description = "Answers as server-sent events"),
        (name = "history", description = "Saved conversations"),
        (name = "threads", description = "Conversations that go on: threads of turns"),
        (name = "search", description = "Full-text search"),
        (name = "usage", description = "Requests, tokens and cost; a key's limits and spend"),
        (name = "health", description = "Liveness and database reachability"),
        (name = "playground", description = "The page where a person uses the service"),
        (name = "openai", description = "OpenAI-compatible Chat Completions: any OpenAI SDK works \
            against it; errors take OpenAI's shape"),
    )
)]
pub struct ApiDoc;

/// The `bearer` security scheme: an API key made by `local key create`.
struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key (`lsk_...`) from `make key OWNER=...`"))
                    .build(),
            ),
        );
    }
}

/// The document as the committed `openapi.json` holds it: pretty JSON and a final newline.
pub fn document() -> String {
    let mut doc = ApiDoc::openapi();
    precise(&mut doc);
    let mut json = doc.to_pretty_json().unwrap_or_default();
    json.push('\n');
    json
}

/// Text with no NUL character; the same, not blank.
const NO_NUL: &str = r"^[^\x00]*$";
const NOT_BLANK: &str = r"^[^\x00]*[^\s\x00][^\x00]*$";
/// A UUID as the service writes them.
const UUID: &str = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

fn object(s: &mut RefOr<Schema>) -> Option<&mut Object> {
    match s {
        RefOr::T(Schema::Object(o)) => Some(o),
        _ => None,
    }
}

fn schema<'a>(doc: &'a mut utoipa::openapi::OpenApi, name: &str) -> Option<&'a mut RefOr<Schema>> {
    doc.components.as_mut()?.schemas.get_mut(name)
}

fn property<'a>(
    doc: &'a mut utoipa::openapi::OpenApi,
    name: &str,
    field: &str,
) -> Option<&'a mut RefOr<Schema>> {
    object(schema(doc, name)?)?.properties.get_mut(field)
}

/// The `i`th schema of a `oneOf`.
fn one_of<'a>(
    doc: &'a mut utoipa::openapi::OpenApi,
    name: &str,
    i: usize,
) -> Option<&'a mut RefOr<Schema>> {
    match schema(doc, name)? {
        RefOr::T(Schema::OneOf(o)) => o.items.get_mut(i),
        _ => None,
    }
}

fn pattern(s: Option<&mut RefOr<Schema>>, pattern: &str) -> bool {
    s.and_then(object)
        .map(|o| o.pattern = Some(pattern.to_owned()))
        .is_some()
}

/// A list of messages that holds at least one `user` message (so at least one message).
fn with_user(s: Option<&mut RefOr<Schema>>) -> bool {
    match s {
        Some(RefOr::T(Schema::Array(a))) => {
            a.min_items = Some(1);
            let contains = serde_json::json!({"type": "object", "required": ["role"],
                "properties": {"role": {"const": "user"}}});
            a.extensions
                .get_or_insert_with(Default::default)
                .insert("contains".into(), contains);
            true
        }
        _ => false,
    }
}

/// Refuses fields the schema does not name (the service answers them with a 400 naming them).
fn closed(doc: &mut utoipa::openapi::OpenApi, name: &str) -> bool {
    schema(doc, name)
        .and_then(object)
        .map(|o| {
            o.additional_properties = Some(Box::new(
                utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
            ));
        })
        .is_some()
}

/// Rules of the request checks that the types' annotations cannot state, written into the
/// schemas, so that what the document allows is what the service accepts (a fuzzer that
/// generates requests from it, such as schemathesis, finds no valid one refused). Returns how
/// many rules found no place (none: a test says so).
fn precise(doc: &mut utoipa::openapi::OpenApi) -> usize {
    let placed = [
        pattern(property(doc, "StreamRequest", "prompt"), NOT_BLANK),
        pattern(property(doc, "StreamRequest", "model"), NOT_BLANK),
        pattern(property(doc, "StreamRequest", "system"), NO_NUL),
        pattern(property(doc, "StreamRequest", "previous_id"), UUID),
        // Fields it does not take are refused (422 naming them).
        schema(doc, "StreamRequest")
            .and_then(object)
            .map(|o| {
                o.additional_properties = Some(Box::new(
                    utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
                ));
            })
            .is_some(),
        pattern(property(doc, "ChatCompletionRequest", "model"), NOT_BLANK),
        pattern(property(doc, "UserMessage", "name"), NO_NUL),
        pattern(property(doc, "InstructionMessage", "name"), NO_NUL),
        pattern(property(doc, "AssistantMessage", "name"), NO_NUL),
        pattern(property(doc, "ChatTextPart", "text"), NO_NUL),
        pattern(one_of(doc, "ChatContent", 0), NO_NUL),
        pattern(one_of(doc, "UserContent", 0), NO_NUL),
        // At least one user message.
        with_user(property(doc, "ChatCompletionRequest", "messages")),
        property(doc, "ChatCompletionRequest", "metadata")
            .and_then(object)
            .map(|o| o.max_properties = Some(16))
            .is_some(),
        match one_of(doc, "Stop", 1) {
            Some(RefOr::T(Schema::Array(a))) => {
                a.max_items = Some(4);
                true
            }
            _ => false,
        },
        // The Responses create body: the chat surface's rules, and no field it does not take.
        pattern(property(doc, "ResponseCreateRequest", "model"), NOT_BLANK),
        pattern(
            property(doc, "ResponseCreateRequest", "instructions"),
            NO_NUL,
        ),
        pattern(property(doc, "TextItemPart", "text"), NO_NUL),
        pattern(one_of(doc, "UserItemContent", 0), NO_NUL),
        pattern(one_of(doc, "OtherItemContent", 0), NO_NUL),
        pattern(one_of(doc, "ResponseInput", 0), NO_NUL),
        with_user(one_of(doc, "ResponseInput", 1)),
        property(doc, "ResponseCreateRequest", "metadata")
            .and_then(object)
            .map(|o| o.max_properties = Some(16))
            .is_some(),
        closed(doc, "ResponseCreateRequest"),
        closed(doc, "UserItem"),
        closed(doc, "OtherItem"),
        closed(doc, "TextParam"),
        pattern(property(doc, "FunctionCallOutputItem", "output"), NO_NUL),
        closed(doc, "FunctionCallItem"),
        closed(doc, "FunctionCallOutputItem"),
        closed(doc, "ResponseTool"),
        // `Last-Event-ID`: a position, a whole number of up to 19 digits (empty: the start).
        doc.paths
            .paths
            .get_mut("/stream/{id}")
            .and_then(|p| p.get.as_mut())
            .and_then(|op| op.parameters.as_mut())
            .and_then(|ps| ps.iter_mut().find(|p| p.name == "last-event-id"))
            .and_then(|p| p.schema.as_mut())
            .and_then(object)
            .map(|o| {
                o.schema_type = SchemaType::Type(Type::String);
                o.pattern = Some("^([0-9]{1,19})?$".to_owned());
            })
            .is_some(),
    ];
    placed.iter().filter(|p| !**p).count()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_rule_finds_its_place() {
        let mut doc = <super::ApiDoc as utoipa::OpenApi>::openapi();
        assert_eq!(super::precise(&mut doc), 0);
    }
}
