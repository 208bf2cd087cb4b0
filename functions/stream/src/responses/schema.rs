//! The OpenAPI schema of a Responses create request: the fields this service takes, as the
//! document shows them (the checks themselves are in `request` and the chat surface's).

use std::collections::HashMap;

/// The OpenAPI schema of the request (the fields this service takes; any other is a 400).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ResponseCreateRequest {
    /// The upstream model (`LLM_MODELS`, when set, lists the allowed ones); at most 200 bytes.
    #[schema(min_length = 1, max_length = 200)]
    model: String,
    /// A string (one user message), or message items, at least one of them `user`.
    input: ResponseInput,
    /// The system message; not inherited from the previous response.
    instructions: Option<String>,
    /// Continue after that response (one of the caller's), from any process.
    #[schema(pattern = "^resp_[0-9a-f]{32}$")]
    previous_response_id: Option<String>,
    /// Typed events instead of one object.
    stream: Option<bool>,
    /// Return at once (`in_progress`); the answer goes on and is read with `GET`.
    background: Option<bool>,
    /// `false`: the response exists only while it runs.
    store: Option<bool>,
    #[schema(minimum = 1, maximum = 1000000)]
    max_output_tokens: Option<u32>,
    #[schema(minimum = 0, maximum = 2)]
    temperature: Option<f32>,
    #[schema(minimum = 0, maximum = 1)]
    top_p: Option<f32>,
    /// At most 16 string values, echoed back.
    metadata: Option<HashMap<String, String>>,
    /// Passed on as sent.
    user: Option<String>,
    /// `{"format": {"type": "text" | "json_object" | "json_schema", ...}}`.
    text: Option<TextParam>,
    /// Passed on as sent.
    parallel_tool_calls: Option<bool>,
    /// Functions the model may call (at most 128); its calls come back as `function_call`
    /// output items.
    #[schema(max_items = 128)]
    tools: Option<Vec<ResponseTool>>,
    /// `none`, `auto`, `required`, or `{"type": "function", "name"}`.
    tool_choice: Option<ResponseToolChoice>,
    /// Only empty: nothing extra is included.
    #[schema(max_items = 0)]
    include: Option<Vec<String>>,
    /// Only `disabled`.
    #[schema(pattern = "^disabled$")]
    truncation: Option<String>,
}

/// A function the model may call.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
struct ResponseTool {
    #[schema(rename = "type", pattern = "^function$")]
    kind: String,
    #[schema(pattern = "^[a-zA-Z0-9_-]{1,64}$")]
    name: String,
    description: Option<String>,
    /// A JSON schema object.
    parameters: Option<HashMap<String, serde_json::Value>>,
    strict: Option<bool>,
}

#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
#[serde(untagged)]
enum ResponseToolChoice {
    Mode(ResponseToolChoiceMode),
    Named(NamedResponseTool),
}

#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
#[serde(rename_all = "lowercase")]
enum ResponseToolChoiceMode {
    None,
    Auto,
    Required,
}

/// `{"type": "function", "name"}`.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
struct NamedResponseTool {
    #[schema(rename = "type", pattern = "^function$")]
    kind: String,
    name: String,
}

/// `input`: a string, or message items.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
#[serde(untagged)]
enum ResponseInput {
    Text(String),
    /// At least one item.
    Items(Vec<InputItem>),
}

/// One input item: a message by its role, a call the model made, or a call's result.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
#[serde(untagged)]
enum InputItem {
    User(UserItem),
    Other(OtherItem),
    Call(FunctionCallItem),
    Output(FunctionCallOutputItem),
}

/// `{"type": "function_call", "call_id", "name", "arguments"}`: a call the model made.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
struct FunctionCallItem {
    #[schema(rename = "type", pattern = "^function_call$")]
    kind: String,
    #[schema(min_length = 1)]
    call_id: String,
    #[schema(pattern = "^[a-zA-Z0-9_-]{1,64}$")]
    name: String,
    arguments: String,
    id: Option<String>,
    status: Option<String>,
}

/// `{"type": "function_call_output", "call_id", "output"}`: a call's result.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
struct FunctionCallOutputItem {
    #[schema(rename = "type", pattern = "^function_call_output$")]
    kind: String,
    #[schema(min_length = 1)]
    call_id: String,
    output: String,
    id: Option<String>,
    status: Option<String>,
}

/// A `user` message: text, or `input_text` and `input_image` parts.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
struct UserItem {
    #[schema(rename = "type", pattern = "^message$")]
    kind: Option<String>,
    #[schema(pattern = "^user$")]
    role: String,
    content: UserItemContent,
    id: Option<String>,
    status: Option<String>,
}

#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
#[serde(untagged)]
enum UserItemContent {
    Text(String),
    Parts(Vec<UserItemPart>),
}

#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
#[serde(untagged)]
enum UserItemPart {
    Text(TextItemPart),
    Image(ImageItemPart),
}

/// An `assistant`, `system` or `developer` message: text, or text parts.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
struct OtherItem {
    #[schema(rename = "type", pattern = "^message$")]
    kind: Option<String>,
    #[schema(pattern = "^(assistant|system|developer)$")]
    role: String,
    content: OtherItemContent,
    id: Option<String>,
    status: Option<String>,
}

#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
#[serde(untagged)]
enum OtherItemContent {
    Text(String),
    Parts(Vec<TextItemPart>),
}

/// `{"type": "input_text" | "output_text", "text"}`.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
struct TextItemPart {
    #[schema(rename = "type", pattern = "^(input_text|output_text)$")]
    kind: String,
    text: String,
}

/// `{"type": "input_image", "image_url", "detail"?}`: an https URL or a base64 `data:` URI of
/// a PNG, JPEG, GIF or WebP image.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
struct ImageItemPart {
    #[schema(rename = "type", pattern = "^input_image$")]
    kind: String,
    #[schema(
        pattern = "^(https://[^\\s\\x00-\\x1f\\x7f-\\x9f]+|data:image/(png|jpeg|gif|webp);base64,([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?)$"
    )]
    image_url: String,
    detail: Option<ImageItemDetail>,
}

#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
#[serde(rename_all = "lowercase")]
enum ImageItemDetail {
    Auto,
    Low,
    High,
}

/// `text`.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
struct TextParam {
    format: Option<TextFormat>,
}

#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
#[serde(untagged)]
enum TextFormat {
    Plain(PlainTextFormat),
    Schema(JsonSchemaTextFormat),
}

/// `{"type": "text"}` or `{"type": "json_object"}`.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
struct PlainTextFormat {
    #[schema(rename = "type", pattern = "^(text|json_object)$")]
    kind: String,
}

/// `{"type": "json_schema", "name", "schema"?, "strict"?, "description"?}`.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
struct JsonSchemaTextFormat {
    #[schema(rename = "type", pattern = "^json_schema$")]
    kind: String,
    #[schema(pattern = "^[a-zA-Z0-9_-]{1,64}$")]
    name: String,
    description: Option<String>,
    schema: Option<HashMap<String, serde_json::Value>>,
    strict: Option<bool>,
}
