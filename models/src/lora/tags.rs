//! A1111's LoRA prompt syntax: `<lora:NAME>`, `<lora:NAME:WEIGHT>`, `<lora:NAME:TE:UNET>` and the
//! named `te=` / `unet=` forms (`lyco` is A1111's alias of `lora`). The text encoder weight is the
//! first positional weight (default 1), the UNet's the second (default: the text encoder's), each
//! overridden by its named form, as A1111's `extra_networks_lora` reads them. Tags are removed
//! from the text before it is encoded; other `<name:...>` extra networks are left alone.

use regex::Regex;
use std::sync::OnceLock;

use super::LoraError;

/// One tag, read.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraTag {
    pub name: String,
    pub te_weight: f32,
    pub unet_weight: f32,
}

/// A1111's `re_extra_net`.
fn extra_net() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"<(\w+):([^>]+)>").expect("static regex"))
}

fn is_lora(kind: &str) -> bool {
    kind == "lora" || kind == "lyco"
}

/// The prompt without its LoRA tags, and the tags in order.
pub fn parse_tags(prompt: &str) -> Result<(String, Vec<LoraTag>), LoraError> {
    let mut tags = Vec::new();
    for c in extra_net().captures_iter(prompt) {
        if is_lora(&c[1]) {
            tags.push(parse_tag(&c[0], &c[2])?);
        }
    }
    let text = extra_net().replace_all(prompt, |c: &regex::Captures| {
        if is_lora(&c[1]) {
            String::new()
        } else {
            c[0].to_string()
        }
    });
    Ok((text.into_owned(), tags))
}

fn weight(tag: &str, what: &str, value: &str) -> Result<f32, LoraError> {
    value
        .trim()
        .parse::<f32>()
        .ok()
        .filter(|w| w.is_finite())
        .ok_or_else(|| {
            LoraError::Prompt(format!(
                "prompt tag `{tag}`: the {what} weight `{value}` is not a number"
            ))
        })
}

fn parse_tag(tag: &str, args: &str) -> Result<LoraTag, LoraError> {
    let mut positional = Vec::new();
    let (mut te, mut unet) = (None, None);
    for item in args.split(':') {
        match item.split_once('=') {
            Some((key, value)) => match key.trim() {
                "te" => te = Some(weight(tag, "text encoder", value)?),
                "unet" => unet = Some(weight(tag, "UNet", value)?),
                other => {
                    return Err(LoraError::Prompt(format!(
                        "prompt tag `{tag}`: unknown setting `{other}` (kiln reads te= and unet=)"
                    )))
                }
            },
            None => positional.push(item),
        }
    }
    let name = positional.first().map(|n| n.trim()).unwrap_or("");
    if name.is_empty() {
        return Err(LoraError::Prompt(format!(
            "prompt tag `{tag}` names no LoRA"
        )));
    }
    if positional.len() > 3 {
        return Err(LoraError::Prompt(format!(
            "prompt tag `{tag}`: at most a text encoder and a UNet weight follow the name"
        )));
    }
    let first = match positional.get(1) {
        Some(v) => weight(tag, "text encoder", v)?,
        None => 1.0,
    };
    let te_weight = te.unwrap_or(first);
    let second = match positional.get(2) {
        Some(v) => weight(tag, "UNet", v)?,
        None => te_weight,
    };
    Ok(LoraTag {
        name: name.to_string(),
        te_weight,
        unet_weight: unet.unwrap_or(second),
    })
}

/// `--lora FILE[:WEIGHT]`: the file and its weight (both parts), 1 when absent.
pub fn parse_cli_lora(arg: &str) -> Result<(String, f32), LoraError> {
    if let Some((file, w)) = arg.rsplit_once(':') {
        let weight = w.trim().parse::<f32>().ok().filter(|w| w.is_finite());
        if let Some(weight) = weight.filter(|_| !file.is_empty()) {
            return Ok((file.to_string(), weight));
        }
        // `C:\x.safetensors` or a name with a colon: only a number after the last colon is a weight.
        if !w.contains(['/', '\\', '.']) && !w.is_empty() {
            return Err(LoraError::Prompt(format!(
                "--lora {arg}: the weight `{w}` is not a number (FILE or FILE:WEIGHT)"
            )));
        }
    }
    Ok((arg.to_string(), 1.0))
}
