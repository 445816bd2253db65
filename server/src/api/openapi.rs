//! GET /openapi.json (OpenAPI 3.1 document of every route) and GET /docs (a plain page listing
//! them). `ROUTES` is the one list of routes; a test checks the router answers each of them.

use axum::response::Html;
use axum::Json;
use serde_json::{json, Map, Value};

pub struct RouteDoc {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// Component schema of the JSON body, if any.
    pub body: Option<&'static str>,
}

const fn r(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    body: Option<&'static str>,
) -> RouteDoc {
    RouteDoc {
        method,
        path,
        summary,
        body,
    }
}

pub const ROUTES: &[RouteDoc] = &[
    r("get", "/", "The web page", None),
    r(
        "get",
        "/health",
        "Liveness, device and queue (no API key needed)",
        None,
    ),
    r("get", "/openapi.json", "This document", None),
    r("get", "/docs", "Route list for people", None),
    r(
        "post",
        "/sdapi/v1/txt2img",
        "Text to image (A1111)",
        Some("GenerationRequest"),
    ),
    r(
        "post",
        "/sdapi/v1/img2img",
        "Image to image and inpainting (A1111)",
        Some("GenerationRequest"),
    ),
    r(
        "get",
        "/sdapi/v1/progress",
        "Progress of the running job; ?skip_current_image=true omits the preview",
        None,
    ),
    r(
        "get",
        "/sdapi/v1/progress/stream",
        "Server-Sent Events: start, step (with preview), end",
        None,
    ),
    r(
        "post",
        "/sdapi/v1/interrupt",
        "Stop the running job at its next step; it returns what it has",
        None,
    ),
    r(
        "post",
        "/sdapi/v1/skip",
        "End the running job's current batch",
        None,
    ),
    r(
        "get",
        "/sdapi/v1/sd-models",
        "Models: title, model_name, hash, sha256, filename",
        None,
    ),
    r(
        "get",
        "/sdapi/v1/loras",
        "LoRA files in --lora-dir: name, alias, path, metadata",
        None,
    ),
    r(
        "post",
        "/sdapi/v1/refresh-loras",
        "Re-read the LoRA folder (always live)",
        None,
    ),
    r(
        "post",
        "/sdapi/v1/refresh-checkpoints",
        "Re-read the models folder (always live)",
        None,
    ),
    r(
        "get",
        "/sdapi/v1/samplers",
        "Samplers: name, aliases, options",
        None,
    ),
    r("get", "/sdapi/v1/schedulers", "Schedule types", None),
    r(
        "get",
        "/sdapi/v1/embeddings",
        "Textual-inversion embeddings: loaded (vectors, width) and skipped files",
        None,
    ),
    r("get", "/sdapi/v1/options", "Settings", None),
    r(
        "post",
        "/sdapi/v1/options",
        "Change settings; sd_model_checkpoint switches model",
        Some("Options"),
    ),
    r(
        "post",
        "/sdapi/v1/png-info",
        "Read a PNG's infotext",
        Some("PngInfoRequest"),
    ),
    r(
        "get",
        "/sdapi/v1/scripts",
        "Scripts script_name may name (x/y/z plot)",
        None,
    ),
    r(
        "post",
        "/v1/images/generations",
        "OpenAI images API (b64_json)",
        Some("OpenAiGenerationsRequest"),
    ),
    r(
        "get",
        "/v1/models",
        "OpenAI model list; each model's kind is image or llm",
        None,
    ),
    r(
        "post",
        "/v1/chat/completions",
        "OpenAI chat completions on a chat model (stream: Server-Sent Events)",
        Some("ChatCompletionRequest"),
    ),
    r(
        "post",
        "/v1/completions",
        "OpenAI text completions on a chat model (raw prompt, no template)",
        Some("CompletionRequest"),
    ),
    r(
        "post",
        "/tokenize",
        "Text to token ids (llama-server)",
        Some("TokenizeRequest"),
    ),
    r(
        "post",
        "/detokenize",
        "Token ids to text (llama-server)",
        Some("DetokenizeRequest"),
    ),
    r(
        "get",
        "/sdapi/v1/upscalers",
        "Upscalers: None, Lanczos, Nearest and each model of --upscaler-dir (A1111)",
        None,
    ),
    r(
        "post",
        "/sdapi/v1/extra-single-image",
        "Upscale one image, as A1111's Extras tab (A1111)",
        Some("ExtrasSingleImageRequest"),
    ),
    r(
        "get",
        "/metrics",
        "Prometheus metrics: requests, tokens, time to first token, queue",
        None,
    ),
];

fn schemas() -> Value {
    let s = |t: &str| json!({"type": t});
    let n = |t: &str| json!({"type": [t, "null"]});
    json!({
        "GenerationRequest": {"type": "object", "properties": {
            "prompt": n("string"), "negative_prompt": n("string"), "seed": n("integer"),
            "steps": n("integer"), "cfg_scale": n("number"), "width": n("integer"),
            "height": n("integer"), "sampler_name": n("string"), "sampler_index": n("string"),
            "scheduler": n("string"), "batch_size": n("integer"), "n_iter": n("integer"),
            "clip_skip": n("integer"), "override_settings": n("object"), "send_images": n("boolean"),
            "init_images": {"type": ["array", "null"], "items": s("string")},
            "mask": n("string"), "denoising_strength": n("number"),
            "inpainting_mask_invert": n("integer"), "include_init_images": n("boolean"),
            "refiner_checkpoint": n("string"), "refiner_switch_at": n("number")}},
        "Options": {"type": "object", "properties": {
            "sd_model_checkpoint": s("string"), "CLIP_stop_at_last_layers": s("integer"),
            "randn_source": {"enum": ["CPU", "GPU", "NV"]}}},
        "ExtrasSingleImageRequest": {"type": "object", "required": ["image"], "properties": {
            "image": s("string"), "resize_mode": n("integer"), "show_extras_results": n("boolean"),
            "upscaling_resize": n("number"), "upscaling_resize_w": n("integer"),
            "upscaling_resize_h": n("integer"), "upscaling_crop": n("boolean"),
            "upscaler_1": n("string"), "upscaler_2": n("string"),
            "extras_upscaler_2_visibility": n("number"), "gfpgan_visibility": n("number"),
            "codeformer_visibility": n("number"), "codeformer_weight": n("number"),
            "upscale_first": n("boolean")}},
        "PngInfoRequest": {"type": "object", "required": ["image"],
            "properties": {"image": s("string")}},
        "ChatCompletionRequest": {"type": "object", "required": ["messages"], "properties": {
            "messages": {"type": "array", "items": s("object")}, "logprobs": n("boolean"),
            "top_logprobs": n("integer"), "response_format": n("object"),
            "tools": {"type": ["array", "null"], "items": s("object")},
            "tool_choice": {"type": ["string", "object", "null"]},
            "parallel_tool_calls": n("boolean"), "model": n("string"), "stream": n("boolean"), "stream_options": n("object"),
            "temperature": n("number"), "top_p": n("number"), "top_k": n("integer"),
            "min_p": n("number"), "max_tokens": n("integer"),
            "max_completion_tokens": n("integer"), "stop": {"type": ["string", "array", "null"]},
            "seed": n("integer"), "frequency_penalty": n("number"),
            "presence_penalty": n("number"), "repetition_penalty": n("number"),
            "logit_bias": n("object"), "n": n("integer"), "user": n("string")}},
        "CompletionRequest": {"type": "object", "required": ["prompt"], "properties": {
            "prompt": {"type": ["string", "array"]}, "logprobs": n("integer"), "model": n("string"), "stream": n("boolean"), "stream_options": n("object"),
            "temperature": n("number"), "top_p": n("number"), "top_k": n("integer"),
            "min_p": n("number"), "max_tokens": n("integer"),
            "max_completion_tokens": n("integer"), "stop": {"type": ["string", "array", "null"]},
            "seed": n("integer"), "frequency_penalty": n("number"),
            "presence_penalty": n("number"), "repetition_penalty": n("number"),
            "logit_bias": n("object"), "n": n("integer"), "user": n("string")}},
        "TokenizeRequest": {"type": "object", "required": ["content"], "properties": {
            "content": s("string"), "add_special": n("boolean"), "with_pieces": n("boolean"),
            "model": n("string")}},
        "DetokenizeRequest": {"type": "object", "required": ["tokens"], "properties": {
            "tokens": {"type": "array", "items": s("integer")}, "model": n("string")}},
        "OpenAiGenerationsRequest": {"type": "object", "required": ["prompt"], "properties": {
            "prompt": s("string"), "model": s("string"), "n": s("integer"), "size": s("string"),
            "response_format": {"enum": ["b64_json"]}, "negative_prompt": s("string"),
            "steps": s("integer"), "cfg_scale": s("number"), "seed": s("integer"),
            "sampler": s("string")}},
        "Error": {"type": "object", "properties": {
            "error": s("string"), "field": n("string"), "detail": s("string")}},
    })
}

pub fn openapi() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let mut op = json!({
            "summary": route.summary,
            "responses": {
                "200": {"description": "OK"},
                "4XX": {"description": "Client error",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        });
        if let Some(body) = route.body {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {
                "schema": {"$ref": format!("#/components/schemas/{body}")}}}});
        }
        let entry = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        entry[route.method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "kiln", "version": env!("CARGO_PKG_VERSION"),
                 "description": "AUTOMATIC1111-compatible and OpenAI images API"},
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "basic": {"type": "http", "scheme": "basic"}},
        },
    })
}

pub async fn document() -> Json<Value> {
    Json(openapi())
}

pub async fn docs() -> Html<String> {
    let rows: String = ROUTES
        .iter()
        .map(|r| {
            format!(
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                r.method.to_uppercase(),
                r.path,
                r.summary
            )
        })
        .collect();
    Html(format!(
        "<!doctype html><meta charset=utf-8><title>kiln API</title>\
         <h1>kiln API</h1><p>Machine-readable: <a href=\"openapi.json\">openapi.json</a></p>\
         <table>{rows}</table>"
    ))
}
