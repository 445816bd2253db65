//! What the HTTP side needs of a chat model before queueing a request: its tokenizer, chat
//! template and config (read once per model, cached; from a folder or a GGUF file's metadata), so prompts are rendered, counted and checked
//! against the context in the handler, and a request that cannot run gets its 400 without waiting
//! in the queue. The worker loads the weights; both sides size contexts with [`slot_context`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kiln_llm::vision::{read_mmproj_config, ImageProcessor};
use kiln_llm::{ChatTemplate, MistralConfig, Tokenizer};
use kiln_runtime::gguf::GgufFile;

use crate::catalog::{ModelEntry, ModelKind};
use crate::error::{ApiError, ApiResult};

/// How the LLM is served: `--parallel`, `--ctx-size`.
#[derive(Clone, Debug)]
pub struct LlmSettings {
    /// Slots: replies decoded together in one batched step.
    pub parallel: usize,
    /// Total context over all slots, split evenly (as llama-server's `-c` with `-np`); `None`:
    /// the model's limit, at most [`DEFAULT_CONTEXT_CAP`].
    pub ctx_size: Option<usize>,
    /// `--chat-template`: `mistral-v7`, `mistral-v3` or a Jinja file, instead of the model's own
    /// (as llama-server's flag): e.g. the built-in V7 format where a model's Jinja template has
    /// no tool calling.
    pub chat_template: Option<String>,
    /// `--mmproj`: llama.cpp's multimodal projector file giving GGUF text models their vision
    /// tower (as llama-server's flag); folders carry their own.
    pub mmproj: Option<PathBuf>,
}

impl Default for LlmSettings {
    fn default() -> Self {
        LlmSettings {
            parallel: 1,
            ctx_size: None,
            chat_template: None,
            mmproj: None,
        }
    }
}

/// The default total context: long enough for real chats, short enough that a 128k-context
/// model's KV cache does not claim tens of GB unasked.
pub const DEFAULT_CONTEXT_CAP: usize = 16384;

/// Positions per slot for a model whose limit is `limit`.
pub fn slot_context(limit: usize, settings: &LlmSettings) -> Result<usize, String> {
    let total = settings
        .ctx_size
        .unwrap_or_else(|| limit.min(DEFAULT_CONTEXT_CAP));
    let per_slot = total / settings.parallel.max(1);
    if per_slot == 0 {
        return Err(format!(
            "a context of {total} tokens over {} slots leaves none per slot",
            settings.parallel
        ));
    }
    Ok(per_slot)
}

pub struct LlmInfo {
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
    pub config: MistralConfig,
    /// Positions per slot: prompt plus reply must fit.
    pub context: usize,
    /// How images are prepared for it (its vision config), when it reads them.
    pub image_processor: Option<ImageProcessor>,
}

impl LlmInfo {
    /// The model reads images: a mistral3 config with a `vision_config` (the Pixtral encoder)
    /// and a tokenizer that knows `[IMG]`.
    pub fn accepts_images(&self) -> bool {
        self.image_processor.is_some()
    }
}

/// Whether a model with this config and tokenizer has a vision encoder to read images.
pub fn accepts_images(config: &MistralConfig, tokenizer: &Tokenizer) -> bool {
    config.vision.is_some() && tokenizer.token_id("[IMG]").is_some()
}

pub struct LlmInfos {
    settings: LlmSettings,
    cache: Mutex<HashMap<PathBuf, Arc<LlmInfo>>>,
}

impl LlmInfos {
    pub fn new(settings: LlmSettings) -> LlmInfos {
        LlmInfos {
            settings,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> &LlmSettings {
        &self.settings
    }

    /// The chat model `entry`'s tokenizer, template and config.
    pub fn get(&self, entry: &ModelEntry) -> ApiResult<Arc<LlmInfo>> {
        if entry.kind != ModelKind::Llm {
            return Err(ApiError::invalid(
                "model",
                format!("{} is an image model, not a chat model", entry.name),
            ));
        }
        if let Some(info) = self.lock().get(&entry.path) {
            return Ok(info.clone());
        }
        let info = Arc::new(load(&entry.path, &self.settings)?);
        self.lock().insert(entry.path.clone(), info.clone());
        Ok(info)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Arc<LlmInfo>>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn load(path: &Path, settings: &LlmSettings) -> ApiResult<LlmInfo> {
    let internal = |e: kiln_runtime::Error| ApiError::internal(format!("cannot read model: {e}"));
    if !path.is_dir() {
        return load_gguf(path, settings).map_err(internal);
    }
    let tokenizer = Tokenizer::from_dir(path).map_err(internal)?;
    let template = match &settings.chat_template {
        Some(name) => ChatTemplate::named(name, &tokenizer),
        None => ChatTemplate::for_model(path, &tokenizer),
    }
    .map_err(internal)?;
    let config = MistralConfig::from_file(&path.join("config.json")).map_err(internal)?;
    let context =
        slot_context(config.max_position_embeddings, settings).map_err(ApiError::internal)?;
    let image_processor = config
        .vision
        .as_ref()
        .filter(|_| accepts_images(&config, &tokenizer))
        .map(|v| v.processor());
    Ok(LlmInfo {
        image_processor,
        tokenizer,
        template,
        config,
        context,
    })
}

/// A llama.cpp GGUF file: tokenizer, template and config from its metadata; with `--mmproj`, the
/// projector file's vision config too, so requests with images are checked before queueing.
fn load_gguf(path: &Path, settings: &LlmSettings) -> kiln_runtime::Result<LlmInfo> {
    let file = GgufFile::open(path)?;
    let tokenizer = Tokenizer::from_gguf(&file)?;
    let template = match &settings.chat_template {
        Some(name) => ChatTemplate::named(name, &tokenizer)?,
        None => ChatTemplate::for_gguf(&file, &tokenizer)?,
    };
    let mut config = MistralConfig::from_gguf(&file)?;
    if let Some(mmproj) = &settings.mmproj {
        config.vision = Some(read_mmproj_config(mmproj, &config)?);
    }
    let context = slot_context(config.max_position_embeddings, settings)
        .map_err(|e| kiln_runtime::Error::load(path, e))?;
    let image_processor = config
        .vision
        .as_ref()
        .filter(|_| accepts_images(&config, &tokenizer))
        .map(|v| v.processor());
    Ok(LlmInfo {
        tokenizer,
        template,
        config,
        context,
        image_processor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(path)
    }

    fn json(path: &str) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(fixture(path)).unwrap()).unwrap()
    }

    fn config(json: &serde_json::Value) -> MistralConfig {
        MistralConfig::from_json(json).unwrap()
    }

    #[test]
    fn images_need_a_vision_config_and_the_img_token() {
        let tekken = Tokenizer::from_dir(&fixture("tests/fixtures/llm/tokenizer")).unwrap();
        let mistral3 = json("tests/fixtures/llm/mistral3/config.json");
        let text_only = json("llm/bundled/config.json");
        assert!(accepts_images(&config(&mistral3), &tekken));
        assert!(!accepts_images(&config(&text_only), &tekken));
        let mut no_tower = mistral3.clone();
        no_tower.as_object_mut().unwrap().remove("vision_config");
        assert!(!accepts_images(&config(&no_tower), &tekken));
        // A tokenizer without [IMG] (the bundled one, renamed) cannot place images.
        let dir = std::env::temp_dir().join(format!("kiln-no-img-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let json_text = std::fs::read_to_string(fixture("llm/bundled/tokenizer.json")).unwrap();
        std::fs::write(
            dir.join("tokenizer.json"),
            json_text.replace("\"[IMG]\"", "\"[NOT_IMG]\""),
        )
        .unwrap();
        let no_img = Tokenizer::from_dir(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        let no_img = no_img.unwrap();
        assert!(no_img.token_id("[NOT_IMG]").is_some());
        assert!(!accepts_images(&config(&mistral3), &no_img));
    }

    #[test]
    fn contexts_split_over_slots() {
        let s = |parallel, ctx_size| LlmSettings {
            parallel,
            ctx_size,
            chat_template: None,
            mmproj: None,
        };
        assert_eq!(slot_context(512, &s(1, None)), Ok(512));
        assert_eq!(slot_context(512, &s(4, None)), Ok(128));
        assert_eq!(slot_context(131072, &s(1, None)), Ok(DEFAULT_CONTEXT_CAP));
        assert_eq!(slot_context(512, &s(2, Some(4096))), Ok(2048));
        assert!(slot_context(512, &s(8, Some(4)))
            .unwrap_err()
            .contains("8 slots"));
    }
}
