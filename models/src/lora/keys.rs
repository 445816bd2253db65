//! What one tensor name in a LoRA file is: which model part, which module (as the file spells
//! it) and which matrix. Two families of names exist:
//! - kohya / A1111 / LyCORIS: `lora_unet_<module_with_underscores>.lora_down.weight`,
//!   `.lora_up.weight`, `.alpha`; `lora_te_` (the one text encoder of SD 1.x / 2.x), `lora_te1_` /
//!   `lora_te2_` (SDXL's two). Underscores replaced the dots, so the module is found later by
//!   matching the model's real module names, not by guessing here.
//! - diffusers / PEFT: `unet.<module>.lora_A.weight` / `lora_B.weight`, the older
//!   `<module>.lora.down.weight` / `lora.up.weight` and `lora_linear_layer.down/up`, attention
//!   processors' `attn1.processor.to_q_lora.down.weight`; `text_encoder.` / `text_encoder_2.`; a
//!   name without a part prefix is the UNet's (diffusers' oldest files).

/// A model part adapters apply to, by its diffusers pipeline component name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    Unet,
    /// SD 1.x / 2.x's text encoder, SDXL's first (`text_encoder`).
    TextEncoder,
    /// SDXL's second text encoder (`text_encoder_2`).
    TextEncoder2,
}

impl Part {
    pub fn component(self) -> &'static str {
        match self {
            Part::Unet => "unet",
            Part::TextEncoder => "text_encoder",
            Part::TextEncoder2 => "text_encoder_2",
        }
    }
}

/// How the file names the module.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ModuleName {
    /// A module path with dots, as in diffusers (`down_blocks.0.attentions.0.proj_in`).
    Dotted(String),
    /// kohya's path with every dot an underscore (`down_blocks_0_attentions_0_proj_in`).
    Underscored(String),
}

impl ModuleName {
    pub fn as_str(&self) -> &str {
        match self {
            ModuleName::Dotted(s) | ModuleName::Underscored(s) => s,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `A` / `lora_down`: `[rank, in]` or `[rank, in, k, k]`.
    Down,
    /// `B` / `lora_up`: `[out, rank]` or `[out, rank, 1, 1]`.
    Up,
    Alpha,
}

/// One tensor name understood.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    pub part: Part,
    /// Set for kohya's `lora_te1_`: valid only on a model with two text encoders.
    pub numbered_encoder: bool,
    pub module: ModuleName,
    pub role: Role,
}

const KOHYA_PARTS: [(&str, Part, bool); 4] = [
    ("lora_unet_", Part::Unet, false),
    ("lora_te1_", Part::TextEncoder, true),
    ("lora_te2_", Part::TextEncoder2, true),
    ("lora_te_", Part::TextEncoder, false),
];

const KOHYA_ROLES: [(&str, Role); 3] = [
    ("lora_down.weight", Role::Down),
    ("lora_up.weight", Role::Up),
    ("alpha", Role::Alpha),
];

const DIFFUSERS_PARTS: [(&str, Part); 3] = [
    ("text_encoder_2.", Part::TextEncoder2),
    ("text_encoder.", Part::TextEncoder),
    ("unet.", Part::Unet),
];

const DIFFUSERS_ROLES: [(&str, Role); 9] = [
    (".lora_A.weight", Role::Down),
    (".lora_B.weight", Role::Up),
    (".lora.down.weight", Role::Down),
    (".lora.up.weight", Role::Up),
    (".lora_linear_layer.down.weight", Role::Down),
    (".lora_linear_layer.up.weight", Role::Up),
    ("_lora.down.weight", Role::Down),
    ("_lora.up.weight", Role::Up),
    (".alpha", Role::Alpha),
];

/// The key's meaning, or `None` for a name kiln does not know (LoHa, LoKr, DoRA scales, norms'
/// full weights...), which the caller reports.
pub fn parse_key(key: &str) -> Option<Key> {
    for (prefix, part, numbered) in KOHYA_PARTS {
        if let Some(rest) = key.strip_prefix(prefix) {
            let (module, suffix) = rest.split_once('.')?;
            let role = KOHYA_ROLES.iter().find(|(s, _)| *s == suffix)?.1;
            return Some(Key {
                part,
                numbered_encoder: numbered,
                module: ModuleName::Underscored(module.to_string()),
                role,
            });
        }
    }
    let (part, rest) = DIFFUSERS_PARTS
        .iter()
        .find_map(|(p, part)| key.strip_prefix(p).map(|r| (*part, r)))
        .unwrap_or((Part::Unet, key));
    let (module, role) = DIFFUSERS_ROLES
        .iter()
        .find_map(|(s, role)| rest.strip_suffix(s).map(|m| (m, *role)))?;
    if module.is_empty() {
        return None;
    }
    Some(Key {
        part,
        numbered_encoder: false,
        module: ModuleName::Dotted(processor_module(module)),
        role,
    })
}

/// diffusers' attention-processor names (`attn1.processor.to_q` from `attn1.processor.to_q_lora`)
/// back to the module (`attn1.to_q`; `to_out` is `to_out.0`).
fn processor_module(module: &str) -> String {
    let Some((attn, proj)) = module.split_once(".processor.") else {
        return module.to_string();
    };
    let proj = if proj == "to_out" { "to_out.0" } else { proj };
    format!("{attn}.{proj}")
}
