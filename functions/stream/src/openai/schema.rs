//! The OpenAPI schema of a Chat Completions request: the fields this service reads, as the
//! document shows them (the checks themselves are in `request` and `tools`).

/// The OpenAPI schema of the request (the fields this service reads).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ChatCompletionRequest {
    /// The upstream model (`LLM_MODELS`, when set, lists the allowed ones); at most 200 bytes.
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    model: String,
    /// `system`, `developer`, `user`, `assistant` and `tool` messages, at least one of them
    /// `user`; content a string or an array of text parts.
    #[schema(min_items = 1)]
    messages: Vec<ChatMessage>,
    /// Functions the model may call (at most 128).
    #[schema(max_items = 128)]
    tools: Option<Vec<FunctionTool>>,
    /// `none`, `auto`, `required`, or `{"type": "function", "function": {"name"}}`; passed on
    /// as sent.
    tool_choice: Option<ChatToolChoice>,
    /// Passed on as sent.
    parallel_tool_calls: Option<bool>,
    /// `{"type": "text"}`, `{"type": "json_object"}` or `{"type": "json_schema",
    /// "json_schema": {"name", "schema", "strict"}}`; passed on as sent.
    response_format: Option<ResponseFormat>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    #[schema(minimum = 1, maximum = 1000000)]
    max_tokens: Option<u32>,
    #[schema(minimum = 1, maximum = 1000000)]
    max_completion_tokens: Option<u32>,
    #[schema(minimum = 0, maximum = 2)]
    temperature: Option<f32>,
    #[schema(minimum = 0, maximum = 1)]
    top_p: Option<f32>,
    /// A string or up to 4 strings.
    stop: Option<Stop>,
    /// Only 1 (one choice per request).
    #[schema(minimum = 1, maximum = 1)]
    n: Option<u32>,
    /// Passed on as sent, as are the parameters below.
    user: Option<String>,
    seed: Option<i64>,
    /// Token ids to biases, passed on as sent.
    logit_bias: Option<std::collections::HashMap<String, f64>>,
    #[schema(minimum = -2, maximum = 2)]
    presence_penalty: Option<f32>,
    #[schema(minimum = -2, maximum = 2)]
    frequency_penalty: Option<f32>,
    reasoning_effort: Option<String>,
    service_tier: Option<String>,
    /// Predicted output, passed on as sent.
    prediction: Option<Object>,
    store: Option<bool>,
    /// The log probabilities of the output tokens, streamed back as OpenAI sends them.
    logprobs: Option<bool>,
    #[schema(minimum = 0, maximum = 20)]
    top_logprobs: Option<u8>,
    /// Only `["text"]`.
    modalities: Option<Vec<TextModality>>,
    /// At most 16 string values, passed on as sent (Bedrock: `requestMetadata`);
    /// `previous_id` (a turn's id) continues that turn's thread.
    metadata: Option<std::collections::HashMap<String, String>>,
}

/// An output modality: only text.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "lowercase")]
enum TextModality {
    Text,
}

/// A JSON object passed on as sent.
type Object = std::collections::HashMap<String, serde_json::Value>;

/// One message of a chat completion request, by its role.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
#[serde(untagged)]
enum ChatMessage {
    Instructions(InstructionMessage),
    User(UserMessage),
    Assistant(AssistantMessage),
    Tool(ToolMessage),
}

/// A `system` or `developer` message.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
struct InstructionMessage {
    role: InstructionRole,
    content: ChatContent,
    name: Option<String>,
}

#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
#[serde(rename_all = "lowercase")]
enum InstructionRole {
    System,
    Developer,
}

/// A `user` message: text, or parts of text and images.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
struct UserMessage {
    #[schema(pattern = "^user$")]
    role: String,
    content: UserContent,
    name: Option<String>,
}

/// A user message's content: text, or text and image parts.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
#[serde(untagged)]
enum UserContent {
    Text(String),
    Parts(Vec<UserPart>),
}

/// A part of a user message.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
#[serde(untagged)]
enum UserPart {
    Text(ChatTextPart),
    Image(ImagePart),
}

/// `{"type": "image_url", "image_url": {"url", "detail"?}}`.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
struct ImagePart {
    #[schema(rename = "type", pattern = "^image_url$")]
    kind: String,
    image_url: ImageSource,
}

/// An image: an https URL or a base64 `data:` URI of a PNG, JPEG, GIF or WebP image; the
/// provider receives it whole (Bedrock: `data:` URIs only).
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
struct ImageSource {
    #[schema(
        pattern = "^(https://[^\\s\\x00-\\x1f\\x7f-\\x9f]+|data:image/(png|jpeg|gif|webp);base64,([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?)$"
    )]
    url: String,
    detail: Option<ImageDetail>,
}

#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
#[serde(rename_all = "lowercase")]
enum ImageDetail {
    Auto,
    Low,
    High,
}

/// An `assistant` message: its content (none when it only calls tools) and its tool calls.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
struct AssistantMessage {
    #[schema(pattern = "^assistant$")]
    role: String,
    content: Option<ChatContent>,
    name: Option<String>,
    tool_calls: Option<Vec<MessageToolCall>>,
}

/// A call an assistant message made.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
struct MessageToolCall {
    #[schema(min_length = 1)]
    id: String,
    #[schema(rename = "type", pattern = "^function$")]
    kind: Option<String>,
    function: CalledFunction,
}

/// The function a call names, and the arguments the model wrote (JSON text).
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
struct CalledFunction {
    name: String,
    arguments: String,
}

/// A `tool` message: a call's result.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
struct ToolMessage {
    #[schema(pattern = "^tool$")]
    role: String,
    content: ChatContent,
    /// The id of the call it answers.
    #[schema(min_length = 1)]
    tool_call_id: String,
}

/// A function the model may call.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
struct FunctionTool {
    #[schema(rename = "type", pattern = "^function$")]
    kind: String,
    function: FunctionDefinition,
}

/// A function's name, description and the JSON schema of its arguments.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
struct FunctionDefinition {
    #[schema(pattern = "^[a-zA-Z0-9_-]{1,64}$")]
    name: String,
    description: Option<String>,
    /// A JSON schema object.
    parameters: Option<Object>,
    strict: Option<bool>,
}

/// Which tool the model must call, if any.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
#[serde(untagged)]
enum ChatToolChoice {
    Mode(ToolChoiceMode),
    Named(NamedToolChoice),
}

#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
#[serde(rename_all = "lowercase")]
enum ToolChoiceMode {
    None,
    Auto,
    Required,
}

/// `{"type": "function", "function": {"name"}}`.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
struct NamedToolChoice {
    #[schema(rename = "type", pattern = "^function$")]
    kind: String,
    function: NamedFunction,
}

#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
struct NamedFunction {
    name: String,
}

/// The format of the answer.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
#[serde(untagged)]
enum ResponseFormat {
    Plain(PlainFormat),
    Schema(SchemaFormat),
}

/// `{"type": "text"}` or `{"type": "json_object"}`.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
struct PlainFormat {
    #[schema(rename = "type", pattern = "^(text|json_object)$")]
    kind: String,
}

/// `{"type": "json_schema", "json_schema": {"name", "schema"?, "strict"?, "description"?}}`.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
struct SchemaFormat {
    #[schema(rename = "type", pattern = "^json_schema$")]
    kind: String,
    json_schema: JsonSchemaFormat,
}

#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
struct JsonSchemaFormat {
    #[schema(pattern = "^[a-zA-Z0-9_-]{1,64}$")]
    name: String,
    description: Option<String>,
    schema: Option<Object>,
    strict: Option<bool>,
}

/// A message's content: text, or text parts.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
#[serde(untagged)]
enum ChatContent {
    Text(String),
    Parts(Vec<ChatTextPart>),
}

/// A text part of a message's content (images, audio and files are refused).
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
struct ChatTextPart {
    #[schema(rename = "type", pattern = "^text$")]
    kind: String,
    text: String,
}

/// `stream_options`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct StreamOptions {
    /// A last chunk with the usage and empty `choices`.
    include_usage: Option<bool>,
}

/// Stop sequences: one string or up to 4.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[allow(dead_code)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}
