//! The prompt syntax, key names, module matching and refusals, on a small registry of real
//! layers (random weights); whole generations against diffusers are in tests/tests/lora.rs.

use std::path::PathBuf;
use std::sync::Arc;

use kiln_nn::lora::LoraRegistry;
use kiln_nn::weights::{RandomSource, Weights};
use kiln_nn::{Conv2d, Linear};
use kiln_runtime::{DType, Device};

use super::*;

fn tag(name: &str, te: f32, unet: f32) -> LoraTag {
    LoraTag {
        name: name.into(),
        te_weight: te,
        unet_weight: unet,
    }
}

#[test]
fn tags_are_read_and_removed_as_a1111_reads_them() {
    let prompt = "a <lora:x> cat <lora:y:0.5>, <lyco:z:0.2:0.8> <lora:w:te=0.3:unet=-1> \
                  <lora:v:0.4:unet=2> <hypernet:h:1>";
    let (text, tags) = parse_tags(prompt).unwrap();
    assert_eq!(text, "a  cat ,    <hypernet:h:1>");
    assert_eq!(
        tags,
        [
            tag("x", 1.0, 1.0),
            tag("y", 0.5, 0.5),
            tag("z", 0.2, 0.8),
            tag("w", 0.3, -1.0),
            tag("v", 0.4, 2.0),
        ]
    );
    assert_eq!(parse_tags("no tags (here:1.2)").unwrap().1, []);
}

#[test]
fn malformed_tags_are_refused_naming_them() {
    for (prompt, says) in [
        (
            "a <lora:x:abc> b",
            "`<lora:x:abc>`: the text encoder weight `abc`",
        ),
        ("<lora:x:1:nan>", "UNet weight `nan`"),
        ("<lora: :1>", "names no LoRA"),
        ("<lora:x:1:2:3>", "at most"),
        ("<lora:x:dyn=4>", "unknown setting `dyn`"),
        ("<lora:x:te=q>", "weight `q`"),
    ] {
        let err = parse_tags(prompt).unwrap_err().to_string();
        assert!(err.contains(says), "{prompt}: {err}");
    }
}

#[test]
fn cli_lora_arguments() {
    let ok = |a: &str| parse_cli_lora(a).unwrap();
    assert_eq!(ok("a.safetensors:0.7"), ("a.safetensors".into(), 0.7));
    assert_eq!(ok("dir/a.safetensors"), ("dir/a.safetensors".into(), 1.0));
    assert_eq!(
        ok("C:\\l\\a.safetensors"),
        ("C:\\l\\a.safetensors".into(), 1.0)
    );
    let err = parse_cli_lora("a.safetensors:heavy")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`heavy` is not a number"), "{err}");
}

fn key(part: Part, numbered: bool, module: ModuleName, role: Role) -> Option<Key> {
    Some(Key {
        part,
        numbered_encoder: numbered,
        module,
        role,
    })
}

#[test]
fn key_names_of_each_format() {
    let u = |s: &str| ModuleName::Underscored(s.into());
    let d = |s: &str| ModuleName::Dotted(s.into());
    let cases = [
        (
            "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight",
            key(
                Part::Unet,
                false,
                u("down_blocks_0_resnets_0_conv1"),
                Role::Down,
            ),
        ),
        (
            "lora_te_text_model_encoder_layers_0_mlp_fc1.alpha",
            key(
                Part::TextEncoder,
                false,
                u("text_model_encoder_layers_0_mlp_fc1"),
                Role::Alpha,
            ),
        ),
        (
            "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight",
            key(
                Part::TextEncoder,
                true,
                u("text_model_encoder_layers_0_mlp_fc1"),
                Role::Up,
            ),
        ),
        (
            "lora_te2_text_model_encoder_layers_0_mlp_fc2.lora_up.weight",
            key(
                Part::TextEncoder2,
                true,
                u("text_model_encoder_layers_0_mlp_fc2"),
                Role::Up,
            ),
        ),
        (
            "unet.mid_block.attentions.0.proj_in.lora_A.weight",
            key(
                Part::Unet,
                false,
                d("mid_block.attentions.0.proj_in"),
                Role::Down,
            ),
        ),
        (
            "text_encoder.text_model.encoder.layers.1.self_attn.q_proj.lora_B.weight",
            key(
                Part::TextEncoder,
                false,
                d("text_model.encoder.layers.1.self_attn.q_proj"),
                Role::Up,
            ),
        ),
        (
            "text_encoder_2.encoder.layers.1.mlp.fc1.lora_linear_layer.down.weight",
            key(
                Part::TextEncoder2,
                false,
                d("encoder.layers.1.mlp.fc1"),
                Role::Down,
            ),
        ),
        (
            "up_blocks.1.attentions.0.transformer_blocks.0.attn2.processor.to_out_lora.up.weight",
            key(
                Part::Unet,
                false,
                d("up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_out.0"),
                Role::Up,
            ),
        ),
        (
            "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k.lora.down.weight",
            key(
                Part::Unet,
                false,
                d("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k"),
                Role::Down,
            ),
        ),
    ];
    for (name, want) in cases {
        assert_eq!(parse_key(name), want, "{name}");
    }
    for unknown in [
        "lora_unet_down_blocks_0_resnets_0_conv1.hada_w1_a",
        "lora_unet_down_blocks_0_resnets_0_conv1.dora_scale",
        "lora_unet_conv_in",
        "unet.conv_in.weight",
        ".lora_A.weight",
    ] {
        assert_eq!(parse_key(unknown), None, "{unknown}");
    }
}

/// A UNet-like and a text-encoder-like set of real layers.
fn targets() -> LoraTargets {
    let unet = LoraRegistry::new();
    let te = LoraRegistry::new();
    let w = |reg: &Arc<LoraRegistry>| {
        let src = Arc::new(RandomSource::new("t", 1));
        Weights::from_source(src, &Device::Cpu, DType::F32).with_lora(reg.clone())
    };
    let block = "down_blocks.0.attentions.0.transformer_blocks.0";
    Linear::new(&w(&unet).pp(format!("{block}.attn1.to_q")), 8, 8, false).unwrap();
    Linear::new(&w(&unet).pp(format!("{block}.attn1.to_out.0")), 8, 8, true).unwrap();
    Conv2d::new(&w(&unet).pp("down_blocks.0.resnets.0.conv1"), 4, 8, 3, 1, 1).unwrap();
    Linear::new(&w(&te).pp("encoder.layers.0.mlp.fc1"), 6, 10, true).unwrap();
    LoraTargets {
        parts: vec![
            LoraPart::new(Part::Unet, unet),
            LoraPart::new(Part::TextEncoder, te),
        ],
        model: "the test model".into(),
    }
}

fn module(part: Part, name: ModuleName, down: &[usize], up: &[usize]) -> LoraModule {
    let n = |s: &[usize]| s.iter().product::<usize>();
    LoraModule {
        part,
        numbered_encoder: false,
        name,
        down: vec![0.1; n(down)],
        down_shape: down.to_vec(),
        up: vec![0.1; n(up)],
        up_shape: up.to_vec(),
        alpha: None,
    }
}

fn active(modules: Vec<LoraModule>) -> ActiveLora {
    ActiveLora {
        file: Arc::new(LoraFile {
            name: "style".into(),
            path: PathBuf::from("/loras/style.safetensors"),
            hash: "0123456789abcdef".into(),
            modules,
            metadata: Default::default(),
        }),
        te_weight: 1.0,
        unet_weight: 0.5,
    }
}

fn slot_len(t: &LoraTargets, part: usize, name: &str) -> usize {
    t.parts[part].registry.slot(name).unwrap().len()
}

/// kohya's underscored names find the module whose dotted name they spell (`to_out_0` is
/// `to_out.0`, `text_model_` is dropped for kiln's text encoder); diffusers' dotted ones match
/// as they are; the guard clears every layer.
#[test]
fn modules_match_the_models_layers() {
    let t = targets();
    let u = |s: &str| ModuleName::Underscored(s.into());
    let d = |s: &str| ModuleName::Dotted(s.into());
    let lora = active(vec![
        module(
            Part::Unet,
            u("down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0"),
            &[2, 8],
            &[8, 2],
        ),
        module(
            Part::Unet,
            d("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"),
            &[2, 8],
            &[8, 2],
        ),
        module(
            Part::Unet,
            u("down_blocks_0_resnets_0_conv1"),
            &[2, 4, 3, 3],
            &[8, 2, 1, 1],
        ),
        module(
            Part::TextEncoder,
            u("text_model_encoder_layers_0_mlp_fc1"),
            &[3, 6],
            &[10, 3],
        ),
    ]);
    let applied = apply(&t, std::slice::from_ref(&lora)).unwrap();
    assert_eq!(t.parts[0].registry.active_layers(), 3);
    assert_eq!(slot_len(&t, 1, "encoder.layers.0.mlp.fc1"), 1);
    drop(applied);
    assert_eq!(t.parts[0].registry.active_layers(), 0);
    assert_eq!(t.parts[1].registry.active_layers(), 0);
}

/// Every refusal names the file, and nothing is left set by a file that failed part-way.
#[test]
fn misfit_files_are_refused_and_set_nothing() {
    let t = targets();
    let u = |s: &str| ModuleName::Underscored(s.into());
    let good = module(
        Part::Unet,
        u("down_blocks_0_resnets_0_conv1"),
        &[2, 4, 3, 3],
        &[8, 2, 1, 1],
    );
    let mut te1 = module(
        Part::TextEncoder,
        u("text_model_encoder_layers_0_mlp_fc1"),
        &[3, 6],
        &[10, 3],
    );
    te1.numbered_encoder = true;
    let cases = [
        (
            module(
                Part::Unet,
                u("down_blocks_0_attentions_0_norm"),
                &[2, 8],
                &[8, 2],
            ),
            "match no layer of the test model: unet `down_blocks_0_attentions_0_norm`",
        ),
        (
            module(
                Part::Unet,
                u("down_blocks_0_resnets_0_conv1"),
                &[2, 5, 3, 3],
                &[8, 2, 1, 1],
            ),
            "does not fit the test model",
        ),
        (te1, "`lora_te1_`"),
        (
            module(
                Part::TextEncoder2,
                u("text_model_encoder_layers_0_mlp_fc1"),
                &[3, 6],
                &[10, 3],
            ),
            "has no text_encoder_2",
        ),
    ];
    for (bad, says) in cases {
        let err = apply(&t, &[active(vec![good.clone(), bad])]).err().unwrap();
        let msg = err.to_string();
        assert!(
            msg.contains("/loras/style.safetensors") && msg.contains(says),
            "{msg}"
        );
        assert_eq!(t.parts[0].registry.active_layers(), 0);
    }
}

/// Scale = weight * alpha / rank (alpha defaults to the rank), the UNet's and the text
/// encoder's weights apart; A1111's hash field.
#[test]
fn scales_and_hashes() {
    let mut m = module(Part::Unet, ModuleName::Dotted("x".into()), &[4, 8], &[8, 4]);
    assert_eq!(m.scale(), 1.0);
    m.alpha = Some(2.0);
    assert_eq!(m.scale(), 0.5);
    let a = active(vec![m]);
    let mut b = a.clone();
    Arc::make_mut(&mut b.file).name = "b:c,d".into();
    let field = infotext_hashes(&[a.clone(), b, a]).unwrap();
    assert_eq!(field, "style: 0123456789ab, bcd: 0123456789ab");
    assert_eq!(infotext_hashes(&[]), None);
}

/// kohya's SDXL keys (the original UNet's block names) name the modules diffusers'
/// `_maybe_map_sgm_blocks_to_diffusers` + `_convert_non_diffusers_lora_to_diffusers` give them
/// (each pair below printed by diffusers 0.42.1 with `layers_per_block=2`), on SDXL base's layout.
#[test]
fn kohya_sdxl_names_map_as_diffusers_maps_them() {
    let config = crate::unet::UnetConfig::from_json(
        r#"{"block_out_channels": [320, 640, 1280],
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
            "projection_class_embeddings_input_dim": 2816, "transformer_layers_per_block": [1, 2, 10],
            "cross_attention_dim": 2048}"#,
    )
    .unwrap();
    let pairs = [
        (
            "input_blocks_1_0_in_layers_2",
            "down_blocks.0.resnets.0.conv1",
        ),
        (
            "input_blocks_2_0_emb_layers_1",
            "down_blocks.0.resnets.1.time_emb_proj",
        ),
        ("input_blocks_3_0_op", "down_blocks.0.downsamplers.0.conv"),
        (
            "input_blocks_4_0_skip_connection",
            "down_blocks.1.resnets.0.conv_shortcut",
        ),
        (
            "input_blocks_4_1_transformer_blocks_0_attn1_to_q",
            "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
        ),
        (
            "input_blocks_5_1_transformer_blocks_0_attn1_to_q",
            "down_blocks.1.attentions.1.transformer_blocks.0.attn1.to_q",
        ),
        (
            "input_blocks_7_1_proj_in",
            "down_blocks.2.attentions.0.proj_in",
        ),
        (
            "input_blocks_8_1_transformer_blocks_9_ff_net_2",
            "down_blocks.2.attentions.1.transformer_blocks.9.ff.net.2",
        ),
        (
            "middle_block_1_transformer_blocks_0_attn2_to_k",
            "mid_block.attentions.0.transformer_blocks.0.attn2.to_k",
        ),
        ("middle_block_2_out_layers_3", "mid_block.resnets.1.conv2"),
        (
            "output_blocks_2_1_proj_out",
            "up_blocks.0.attentions.2.proj_out",
        ),
        ("output_blocks_2_2_conv", "up_blocks.0.upsamplers.0.conv"),
        (
            "output_blocks_3_0_skip_connection",
            "up_blocks.1.resnets.0.conv_shortcut",
        ),
        ("output_blocks_5_2_conv", "up_blocks.1.upsamplers.0.conv"),
        (
            "output_blocks_8_0_in_layers_2",
            "up_blocks.2.resnets.2.conv1",
        ),
        ("input_blocks_0_0", "conv_in"),
        ("out_2", "conv_out"),
        ("time_embed_0", "time_embedding.linear_1"),
        ("label_emb_0_2", "add_embedding.linear_2"),
    ];
    let names: Vec<String> = pairs.iter().map(|(_, d)| d.to_string()).collect();
    let aliases = super::sgm::sgm_aliases(&config, &names);
    for (kohya, diffusers) in pairs {
        assert_eq!(
            aliases.get(kohya).map(String::as_str),
            Some(diffusers),
            "{kohya}"
        );
    }
    assert_eq!(aliases.len(), pairs.len());
}

/// A file whose cross-attention reads another width than the model's is refused up front saying
/// which family it is for, before any module is matched.
#[test]
fn a_lora_for_another_family_is_refused_naming_it() {
    let unet = LoraRegistry::new();
    let src = Arc::new(RandomSource::new("t", 1));
    let w = Weights::from_source(src, &Device::Cpu, DType::F32).with_lora(unet.clone());
    let name = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k";
    Linear::new(&w.pp(name), 2048, 8, false).unwrap();
    let t = LoraTargets {
        parts: vec![LoraPart::new(Part::Unet, unet)],
        model: "this SDXL model (xl)".into(),
    };
    let sd1 = module(
        Part::Unet,
        ModuleName::Underscored(
            "down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k".into(),
        ),
        &[4, 768],
        &[8, 4],
    );
    let msg = apply(&t, &[active(vec![sd1])]).err().unwrap().to_string();
    assert!(
        msg.contains(
            "/loras/style.safetensors: is an SD 1.x LoRA (its UNet's cross-attention \
                      reads 768-wide text), but this SDXL model (xl) reads 2048-wide text: a \
                      LoRA for another architecture"
        ),
        "{msg}"
    );
    let fits = module(
        Part::Unet,
        ModuleName::Dotted(name.into()),
        &[4, 2048],
        &[8, 4],
    );
    apply(&t, &[active(vec![fits])]).unwrap();
}
