//! `kiln chat`: one reply to `-p` on stdout (for scripts), or an interactive multi-turn chat with
//! streaming output where each turn prefills only its new tokens. Flags follow llama.cpp's names.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use kiln_llm::chat_model::{chat_memory, context_within_budget, plan_weights};
use kiln_llm::constrain::ResponseFormat;
use kiln_llm::kv_cache::parse_kv_type;
use kiln_llm::sampling::SamplingParams;
use kiln_llm::vision::{decode_image, read_mmproj_config, DecodedImage};
use kiln_llm::{
    ChatModel, Conversation, Flow, GenerateOptions, Generation, Message, MistralConfig,
};
use kiln_nn::weights::WeightType;
use kiln_runtime::memory::format_bytes;
use kiln_runtime::Device;

use crate::generate::parse_max_vram;

/// Where the bundled chat model lives in a checkout, relative to the workspace root.
const BUNDLED_CHAT_MODEL: &str = "llm/bundled";

#[derive(Args, Debug)]
pub struct ChatArgs {
    /// Model folder: config.json (mistral, mistral3 or llama), safetensors weights (sharded or
    /// not), tekken.json or tokenizer.json; or a llama.cpp .gguf file (Mistral / Llama
    /// architecture, Tekken or SentencePiece vocabulary). Default: the bundled tiny arithmetic
    /// model.
    #[arg(short = 'm', long)]
    model: Option<PathBuf>,

    /// Answer this one message, print the reply to stdout and exit. Without it: interactive.
    #[arg(short = 'p', long)]
    prompt: Option<String>,

    /// System prompt.
    #[arg(long)]
    system: Option<String>,

    /// An image (PNG, JPEG or WebP) sent with the first message, for models with a vision
    /// encoder (Mistral Small 3.1). Repeatable: images go in the order given. In the
    /// interactive chat, `/image FILE` attaches one to the next message.
    #[arg(long = "image", value_name = "FILE")]
    images: Vec<PathBuf>,

    /// llama.cpp's multimodal projector file (`mmproj-*.gguf`, Pixtral / Mistral Small 3.x) for a
    /// GGUF text model: its vision tower and projector, so --image works with -m FILE.gguf.
    #[arg(long, value_name = "FILE")]
    mmproj: Option<PathBuf>,

    /// Chat template: mistral-v7, mistral-v3, or a Jinja file. Default: the model folder's own
    /// template, else the Mistral format its tokenizer implies.
    #[arg(long)]
    chat_template: Option<String>,

    /// Temperature; 0 = greedy.
    #[arg(long = "temp", alias = "temperature", default_value_t = SamplingParams::default().temperature)]
    temperature: f32,

    /// Keep the K most likely tokens (0 = off).
    #[arg(long, default_value_t = SamplingParams::default().top_k)]
    top_k: usize,

    /// Nucleus sampling mass (1 = off).
    #[arg(long, default_value_t = SamplingParams::default().top_p)]
    top_p: f32,

    /// Drop tokens below this fraction of the most likely one's probability (0 = off).
    #[arg(long, default_value_t = SamplingParams::default().min_p)]
    min_p: f32,

    /// llama.cpp's repetition penalty over the last --repeat-last-n tokens (1 = off).
    #[arg(long, default_value_t = SamplingParams::default().repetition_penalty)]
    repeat_penalty: f32,

    /// How many recent tokens the repetition penalty looks at.
    #[arg(long, default_value_t = SamplingParams::default().repeat_last_n)]
    repeat_last_n: usize,

    /// OpenAI's frequency penalty, -2..2.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    frequency_penalty: f32,

    /// OpenAI's presence penalty, -2..2.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    presence_penalty: f32,

    /// Bias a token's logit: ID=BIAS or llama.cpp's ID+BIAS / ID-BIAS (-100 bans it). Repeatable.
    #[arg(long, allow_hyphen_values = true)]
    logit_bias: Vec<String>,

    /// Random seed (-1: a random one, printed with the statistics).
    #[arg(short = 's', long, default_value_t = -1, allow_negative_numbers = true)]
    seed: i64,

    /// Stop when the reply contains this string (not printed). Repeatable.
    #[arg(long)]
    stop: Vec<String>,

    /// Tokens to generate at most per reply (-1: until the context is full).
    #[arg(short = 'n', long = "max-tokens", alias = "n-predict", default_value_t = -1, allow_negative_numbers = true)]
    max_tokens: i64,

    /// Context size in tokens. Default: the model's limit, capped so the KV cache takes at most a
    /// quarter of the available memory, and with --max-vram so the whole chat fits SIZE.
    #[arg(short = 'c', long)]
    ctx_size: Option<usize>,

    /// Refuse to load, naming the minimum, when the chat needs more device memory than SIZE (e.g.
    /// 8G, 800M): the weights at --weight-type, the KV cache for the context and the activations
    /// of a turn that fills it, computed from config.json before loading (as `kiln bench llm`
    /// does), plus a vision model's encoder for its largest image. Without -c the default
    /// context is capped to fit.
    #[arg(long, value_name = "SIZE")]
    max_vram: Option<String>,

    /// Print the device memory the chat would need (weights, KV cache for the context, the
    /// activations of a turn that fills it, a vision encoder with its largest image) from
    /// config.json, then exit without loading. The context: -c, else the model's limit.
    #[arg(long)]
    plan: bool,

    /// KV cache element type: f16 or f32.
    #[arg(long, default_value = "f16")]
    kv_type: String,

    /// Weight storage: f32, f16, or quantised at load: q8_0, q4_0, nf4.
    #[arg(long, default_value = "f32")]
    weight_type: String,

    /// Constrain each reply to a JSON object (OpenAI's `json_object` response format).
    #[arg(long, conflicts_with = "json_schema")]
    json: bool,

    /// Constrain each reply to JSON valid against the JSON Schema in FILE: tokens the schema
    /// cannot accept are masked out before sampling, so the reply parses and validates.
    #[arg(long, value_name = "FILE")]
    json_schema: Option<PathBuf>,
}

impl ChatArgs {
    fn options(&self) -> Result<GenerateOptions> {
        let mut logit_bias = std::collections::BTreeMap::new();
        for spec in &self.logit_bias {
            let (id, bias) = parse_logit_bias(spec)?;
            logit_bias.insert(id, bias);
        }
        let sampling = SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            logit_bias,
            seed: (self.seed >= 0).then_some(self.seed as u64),
            logprobs: false,
            top_logprobs: 0,
        };
        sampling.validate().map_err(|e| anyhow!("{e}"))?;
        let max_tokens = match self.max_tokens {
            -1 => None,
            n if n >= 1 => Some(n as usize),
            n => bail!("--max-tokens must be -1 (no limit) or at least 1, got {n}"),
        };
        if let Some(i) = self.stop.iter().position(String::is_empty) {
            bail!("--stop #{} is empty", i + 1);
        }
        Ok(GenerateOptions {
            sampling,
            max_tokens,
            stop: self.stop.clone(),
            constraint: None,
        })
    }

    /// The response format --json / --json-schema ask for; the schema file is read and parsed
    /// here, before the model loads, so a bad file fails at once.
    fn response_format(&self) -> Result<ResponseFormat> {
        if self.json {
            return Ok(ResponseFormat::JsonObject);
        }
        let Some(path) = &self.json_schema else {
            return Ok(ResponseFormat::Text);
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--json-schema: cannot read {}", path.display()))?;
        let schema: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("--json-schema: {} is not valid JSON", path.display()))?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "schema".into());
        Ok(ResponseFormat::JsonSchema {
            name,
            schema,
            strict: true,
        })
    }
}

/// `ID=BIAS`, `ID+BIAS` or `ID-BIAS`.
fn parse_logit_bias(spec: &str) -> Result<(u32, f32)> {
    let bad =
        || anyhow!("--logit-bias {spec:?}: expected TOKEN_ID=BIAS, TOKEN_ID+BIAS or TOKEN_ID-BIAS");
    let split = spec.find(['=', '+', '-']).ok_or_else(bad)?;
    let id: u32 = spec[..split].trim().parse().map_err(|_| bad())?;
    let bias = if spec[split..].starts_with('=') {
        &spec[split + 1..]
    } else {
        &spec[split..]
    };
    let bias: f32 = bias.trim().parse().map_err(|_| bad())?;
    Ok((id, bias))
}

/// The bundled chat model of this checkout, used when `-m` is omitted.
pub fn bundled_chat_model() -> Result<PathBuf> {
    let cli_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = cli_dir.parent().unwrap_or(cli_dir).join(BUNDLED_CHAT_MODEL);
    if path.join("config.json").is_file() {
        return Ok(path);
    }
    bail!(
        "no model given (-m) and the bundled chat model is missing ({}); pass -m with a model folder",
        path.display()
    )
}

/// Set by Ctrl-C while a reply streams; the reply stops at the next token.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

#[cfg(unix)]
fn catch_ctrl_c() {
    extern "C" fn on_sigint(_: libc::c_int) {
        INTERRUPTED.store(true, Ordering::SeqCst);
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
}

#[cfg(not(unix))]
fn catch_ctrl_c() {}

pub fn run(args: &ChatArgs, device: &Device) -> Result<()> {
    let mut options = args.options()?;
    let format = args.response_format()?;
    let weight_type: WeightType = args.weight_type.parse()?;
    let kv_dtype = parse_kv_type(&args.kv_type)?;
    let dir = match &args.model {
        Some(m) => m.clone(),
        None => bundled_chat_model()?,
    };
    // A GGUF file's packed weights load as stored: the estimates below count them so.
    if args.plan {
        let config = config_with_mmproj(&dir, args.mmproj.as_deref())?;
        let planned = plan_weights(&dir, &config, weight_type)?;
        let weight_type = planned.weight_type;
        let context = args.ctx_size.unwrap_or(config.max_position_embeddings);
        let kv = device.float_dtype(kv_dtype);
        let m = chat_memory(&config, &planned, context, kv);
        println!(
            "{}: {} = weights {} ({weight_type}) + KV cache {} ({context} tokens at {kv}) + \
             activations {}{}",
            dir.display(),
            format_bytes(m.total),
            format_bytes(m.weights),
            format_bytes(m.kv_cache),
            format_bytes(m.activations),
            match m.vision {
                0 => String::new(),
                v => format!(
                    " + vision encoder {} (weights and its largest image)",
                    format_bytes(v)
                ),
            }
        );
        return Ok(());
    }
    // Checked from the config before anything loads, so a chat that cannot fit fails at once.
    let budget_context = match parse_max_vram(args.max_vram.as_deref())? {
        Some(budget) => {
            let config = config_with_mmproj(&dir, args.mmproj.as_deref())?;
            let planned = plan_weights(&dir, &config, weight_type)?;
            let kv = device.float_dtype(kv_dtype);
            Some((
                context_within_budget(&config, &planned, kv, budget, args.ctx_size)?,
                budget,
            ))
        }
        None => None,
    };
    // Read before loading, so a bad file fails at once.
    let images = args
        .images
        .iter()
        .map(|path| read_image(path))
        .collect::<Result<Vec<_>>>()?;
    let chat = match &args.mmproj {
        Some(mmproj) => ChatModel::load_with_mmproj(
            &dir,
            device,
            weight_type,
            args.chat_template.as_deref(),
            mmproj,
        ),
        None => ChatModel::load(&dir, device, weight_type, args.chat_template.as_deref()),
    }
    .with_context(|| format!("loading {}", dir.display()))?;
    if !images.is_empty() && chat.model.vision.is_none() {
        bail!(
            "--image: {} has no vision encoder (a mistral3 folder with a vision_config reads \
             images; GGUF files are read without their vision encoder)",
            dir.display()
        );
    }
    if !format.is_text() {
        let vocab = chat.tokenizer.constraint_vocabulary()?;
        options.constraint = format
            .compile(&vocab)
            .map_err(|e| match &args.json_schema {
                Some(path) => anyhow!("--json-schema {}: {e}", path.display()),
                None => anyhow!("--json: {e}"),
            })?;
    }
    let (mut context, capped) = chat.context_size(args.ctx_size, kv_dtype)?;
    if let Some((fits, budget)) = budget_context.filter(|&(fits, _)| fits < context) {
        context = fits;
        eprintln!(
            "context: {context} tokens (the model allows {}; capped to fit --max-vram {}; \
             --ctx-size to change)",
            chat.model.config.max_position_embeddings,
            format_bytes(budget)
        );
    } else if capped {
        eprintln!(
            "context: {context} tokens (the model allows {}; capped so the KV cache, {} per token, \
             fits memory; --ctx-size to change)",
            chat.model.config.max_position_embeddings,
            format_bytes(chat.kv_bytes_per_token(kv_dtype))
        );
    }
    let mut conversation = Conversation::new(&chat, context, kv_dtype)?;
    conversation.set_system(args.system.clone());

    if let Some(prompt) = &args.prompt {
        let mut stdout = std::io::stdout();
        let mut message = Message::user(prompt.as_str());
        message.images = images;
        let generation = conversation.reply_to(&chat, message, &options, |text| {
            let _ = stdout.write_all(text.as_bytes());
            let _ = stdout.flush();
            Flow::Continue
        })?;
        println!();
        print_stats(&generation);
        return Ok(());
    }
    interactive(&chat, &mut conversation, &options, images)
}

/// The model's config, with an mmproj file's vision tower when one is given (memory plans).
fn config_with_mmproj(dir: &Path, mmproj: Option<&Path>) -> Result<MistralConfig> {
    let mut config = MistralConfig::for_model(dir)?;
    if let Some(path) = mmproj {
        config.vision = Some(
            read_mmproj_config(path, &config)
                .with_context(|| format!("--mmproj {}", path.display()))?,
        );
    }
    Ok(config)
}

fn read_image(path: &Path) -> Result<Arc<DecodedImage>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("--image: cannot read {}", path.display()))?;
    let image = decode_image(&bytes, &path.display().to_string())
        .with_context(|| format!("--image {}", path.display()))?;
    Ok(Arc::new(image))
}

fn interactive(
    chat: &ChatModel,
    conversation: &mut Conversation,
    options: &GenerateOptions,
    mut pending_images: Vec<Arc<DecodedImage>>,
) -> Result<()> {
    catch_ctrl_c();
    let terminal = std::io::stdin().is_terminal();
    if terminal {
        eprintln!(
            "kiln chat ({}, {}). /reset clears the conversation, /system TEXT sets the system \
             prompt, /image FILE attaches an image, /exit or Ctrl-D quits; Ctrl-C stops a reply.",
            chat.model.config.model_type,
            chat.template.describe()
        );
    }
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    let mut line = String::new();
    loop {
        if terminal {
            print!("> ");
            stdout.flush()?;
        }
        line.clear();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let input = line.trim_end_matches(['\n', '\r']);
        match input.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                conversation.reset();
                eprintln!("(conversation cleared)");
                continue;
            }
            _ => {}
        }
        if let Some(path) = input.trim().strip_prefix("/image ") {
            if chat.model.vision.is_none() {
                eprintln!("(this model has no vision encoder)");
            } else {
                match read_image(Path::new(path.trim())) {
                    Ok(image) => {
                        pending_images.push(image);
                        eprintln!(
                            "({} image(s) attached to the next message)",
                            pending_images.len()
                        );
                    }
                    Err(e) => eprintln!("error: {e:#}"),
                }
            }
            continue;
        }
        if let Some(system) = input.trim().strip_prefix("/system") {
            conversation.set_system(Some(system.trim().to_string()));
            conversation.reset();
            eprintln!("(system prompt set; conversation cleared)");
            continue;
        }
        INTERRUPTED.store(false, Ordering::SeqCst);
        let mut message = Message::user(input);
        message.images = std::mem::take(&mut pending_images);
        let result = conversation.reply_to(chat, message, options, |text| {
            let _ = stdout.write_all(text.as_bytes());
            let _ = stdout.flush();
            if INTERRUPTED.load(Ordering::SeqCst) {
                Flow::Stop
            } else {
                Flow::Continue
            }
        });
        println!();
        match result {
            Ok(generation) => {
                if generation.interrupted {
                    eprintln!("(reply stopped)");
                }
                print_stats(&generation);
            }
            // A turn that cannot run (say, the context is full) is reported; the chat goes on.
            Err(e) => eprintln!("error: {e}"),
        }
    }
    Ok(())
}

fn print_stats(g: &Generation) {
    eprintln!(
        "prompt: {} tokens ({} run, {:.1} tok/s); reply: {} tokens ({:.1} tok/s), finish {}, seed {}",
        g.prompt_tokens,
        g.prefilled,
        g.prefill_tokens_per_second(),
        g.sampled.len(),
        g.decode_tokens_per_second(),
        g.finish.as_str(),
        g.seed
    );
}

#[cfg(test)]
mod tests {
    use super::parse_logit_bias;

    #[test]
    fn logit_bias_forms() {
        assert_eq!(parse_logit_bias("15=2.5").unwrap(), (15, 2.5));
        assert_eq!(parse_logit_bias("15+1").unwrap(), (15, 1.0));
        assert_eq!(parse_logit_bias("15-100").unwrap(), (15, -100.0));
        assert_eq!(parse_logit_bias("7=-3").unwrap(), (7, -3.0));
        assert!(parse_logit_bias("x=1").is_err());
        assert!(parse_logit_bias("15").is_err());
    }
}
