//! Samplers against diffusers 0.42 (tests/fixtures/schedulers/*.json, written by
//! tools/make_scheduler_fixtures.py with torch 2.15 on CPU).
//!
//! Tolerances (and what was measured when they were set):
//! - timesteps: exact, except the fractional ones (Euler with Karras or exponential sigmas), which come from
//!   numpy's float32 log of the sigma table (numpy's own SIMD log may differ from the C library's
//!   by an ulp): within 2e-4 (measured: at most 1 ulp of 999, 6.1e-5);
//! - sigmas and init_noise_sigma: relative 1e-6 (measured: bit-identical but one value, 1.1e-7);
//! - latents after a whole 4- or 20-step loop and for img2img (fake model; initial and ancestral
//!   noise from one seeded torch CPU generator, itself bit-exact): absolute 1e-5 on latents of
//!   magnitude 1-40 (measured: 3.6e-7 at most, most runs bit-identical). DPM++ SDE's noise is
//!   torchsde's Brownian tree seeded with the run's seed (diffusers' `noise_sampler_seed`),
//!   reproduced here bit for bit.

use kiln_models::rng::{NoiseSource, TorchCpuRng};
use kiln_models::schedulers::{
    build_scheduler, img2img_start, parse_schedule, SamplerKind, SamplerSpec, Scheduler,
    SchedulerConfig, SchedulerError, SigmaSchedule, TimestepSpacing,
};
use kiln_tests::fixtures;
use kiln_tests::golden::{json_f32s, read_json};
use serde_json::Value;

fn fixture(name: &str) -> Value {
    read_json(&fixtures().join("schedulers").join(name))
}

/// The fixture's stand-in for a UNet: 0.1 * x + cos(t / 100), the cosine in double.
fn fake_model(x: &[f32], t: f32) -> Vec<f32> {
    let c = (t as f64 / 100.0).cos() as f32;
    x.iter().map(|v| v * 0.1 + c).collect()
}

fn scheduler(
    cfg: &Value,
    sampler: &str,
    steps: usize,
) -> Result<Box<dyn Scheduler>, SchedulerError> {
    let cfg = SchedulerConfig::from_json(cfg)?;
    build_scheduler(&cfg, &SamplerSpec::parse(sampler)?, steps)
}

fn denoise(
    s: &mut dyn Scheduler,
    mut latents: Vec<f32>,
    from: usize,
    rng: &mut dyn NoiseSource,
) -> Vec<f32> {
    for i in from..s.timesteps().len() {
        let x = s.scale_model_input(&latents, i).unwrap();
        let m = fake_model(&x, s.timesteps()[i]);
        latents = s.step(&m, i, &latents, rng).unwrap();
    }
    latents
}

fn assert_close(label: &str, got: &[f32], want: &[f32], abs: f32, rel: f32) {
    assert_eq!(got.len(), want.len(), "{label}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = abs + rel * w.abs();
        assert!(
            (g - w).abs() <= tol || (g.is_infinite() && g == w),
            "{label}[{i}]: {g} vs {w} (tolerance {tol})"
        );
    }
}

fn check_schedule(label: &str, s: &dyn Scheduler, case: &Value) {
    let want_ts = json_f32s(&case["timesteps"]);
    // Fractional timesteps come from numpy's float32 log of the sigma table (see the header).
    let ts_tol = if want_ts.iter().all(|t| t.fract() == 0.0) {
        0.0
    } else {
        2e-4
    };
    assert_close(
        &format!("{label} timesteps"),
        s.timesteps(),
        &want_ts,
        ts_tol,
        0.0,
    );
    match (s.sigmas(), case.get("sigmas")) {
        (Some(got), Some(want)) => {
            assert_close(&format!("{label} sigmas"), got, &json_f32s(want), 0.0, 1e-6)
        }
        (None, None) => {}
        (got, want) => panic!(
            "{label}: sigmas present here {}, in diffusers {}",
            got.is_some(),
            want.is_some()
        ),
    }
    let want = case["init_noise_sigma"].as_f64().unwrap() as f32;
    assert_close(
        &format!("{label} init_noise_sigma"),
        &[s.init_noise_sigma()],
        &[want],
        0.0,
        1e-6,
    );
}

#[test]
fn txt2img_loops_match_diffusers() {
    let fx = fixture("runs.json");
    let seed = fx["seed"].as_u64().unwrap();
    let len: usize = fx["latent_shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .product();
    let runs = fx["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 162);
    for run in runs {
        let (config, sampler) = (
            run["config"].as_str().unwrap(),
            run["sampler"].as_str().unwrap(),
        );
        let steps = run["steps"].as_u64().unwrap() as usize;
        let label = format!("{config} {sampler} {steps} steps");
        let mut s = scheduler(&fx["configs"][config], sampler, steps).unwrap();
        check_schedule(&label, s.as_ref(), run);
        // DPM++ SDE's Brownian tree is seeded with the run's seed (diffusers' noise_sampler_seed).
        s.set_noise_seeds(&[seed]);
        let mut rng = TorchCpuRng::new(seed);
        let init = s.init_noise_sigma();
        let latents: Vec<f32> = rng.randn(len).iter().map(|v| v * init).collect();
        let out = denoise(s.as_mut(), latents, 0, &mut rng);
        assert_close(
            &format!("{label} latents"),
            &out,
            &json_f32s(&run["final"]),
            1e-5,
            0.0,
        );
    }
}

#[test]
fn ddim_with_eta_matches_diffusers() {
    let fx = fixture("runs.json");
    let run = &fx["ddim_eta"];
    let cfg = SchedulerConfig::from_json(&fx["configs"]["sd1"]).unwrap();
    let mut spec = SamplerSpec::parse("DDIM").unwrap();
    spec.eta = run["eta"].as_f64().unwrap() as f32;
    let mut s = build_scheduler(&cfg, &spec, 4).unwrap();
    check_schedule("DDIM eta", s.as_ref(), run);
    let mut rng = TorchCpuRng::new(fx["seed"].as_u64().unwrap());
    let latents = rng.randn(256);
    let out = denoise(s.as_mut(), latents, 0, &mut rng);
    assert_close(
        "DDIM eta latents",
        &out,
        &json_f32s(&run["final"]),
        1e-5,
        0.0,
    );
}

#[test]
fn img2img_matches_diffusers() {
    let fx = fixture("img2img.json");
    let seed = fx["seed"].as_u64().unwrap();
    let steps = fx["steps"].as_u64().unwrap() as usize;
    let strength = fx["strength"].as_f64().unwrap();
    let len: usize = fx["latent_shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .product();
    let image: Vec<f32> = (0..len)
        .map(|i| ((i as f64 * 0.37).sin() * 0.8) as f32)
        .collect();
    for run in fx["runs"].as_array().unwrap() {
        let sampler = run["sampler"].as_str().unwrap();
        let mut s = scheduler(&fx["config"], sampler, steps).unwrap();
        s.set_noise_seeds(&[seed]);
        let start = img2img_start(steps, strength).unwrap();
        assert_eq!(
            start as u64,
            run["t_start"].as_u64().unwrap(),
            "{sampler} start"
        );
        let mut rng = TorchCpuRng::new(seed);
        let noise = rng.randn(len);
        // Heun and DPM2 hold two entries per step.
        let first = start * s.order();
        let noised = s.add_noise(&image, &noise, first).unwrap();
        assert_close(
            &format!("{sampler} noised"),
            &noised,
            &json_f32s(&run["noised"]),
            1e-6,
            1e-6,
        );
        let out = denoise(s.as_mut(), noised, first, &mut rng);
        assert_close(
            &format!("{sampler} img2img latents"),
            &out,
            &json_f32s(&run["final"]),
            1e-5,
            0.0,
        );
    }
}

#[test]
fn schedules_match_diffusers_for_many_step_counts() {
    let fx = fixture("sweep.json");
    for case in fx["cases"].as_array().unwrap() {
        let (config, sampler) = (
            case["config"].as_str().unwrap(),
            case["sampler"].as_str().unwrap(),
        );
        let steps = case["steps"].as_u64().unwrap() as usize;
        let label = format!("{config} {sampler} {steps} steps");
        let built = scheduler(&fx["configs"][config], sampler, steps);
        match (built, case.get("error")) {
            (Ok(s), None) => check_schedule(&label, s.as_ref(), case),
            (Err(_), Some(_)) => {}
            (Ok(_), Some(e)) => panic!("{label}: diffusers refused ({e}) but kiln accepted"),
            (Err(e), None) => panic!("{label}: kiln refused: {e}"),
        }
    }
}

#[test]
fn sampler_names_parse() {
    let cases = [
        ("Euler", SamplerKind::Euler, SigmaSchedule::Default),
        ("euler", SamplerKind::Euler, SigmaSchedule::Default),
        (
            "Euler a",
            SamplerKind::EulerAncestral,
            SigmaSchedule::Default,
        ),
        (
            "euler_a",
            SamplerKind::EulerAncestral,
            SigmaSchedule::Default,
        ),
        (
            "k_euler_a",
            SamplerKind::EulerAncestral,
            SigmaSchedule::Default,
        ),
        ("DDIM", SamplerKind::Ddim, SigmaSchedule::Default),
        ("DDPM", SamplerKind::Ddpm, SigmaSchedule::Default),
        ("ddpm", SamplerKind::Ddpm, SigmaSchedule::Default),
        ("DPM++ 2M", SamplerKind::DpmPp2m, SigmaSchedule::Default),
        ("dpm++2m", SamplerKind::DpmPp2m, SigmaSchedule::Default),
        (
            "DPM++ 2M Karras",
            SamplerKind::DpmPp2m,
            SigmaSchedule::Karras,
        ),
        (
            "  dpm++   2m  karras ",
            SamplerKind::DpmPp2m,
            SigmaSchedule::Karras,
        ),
        ("k_dpmpp_2m_ka", SamplerKind::DpmPp2m, SigmaSchedule::Karras),
        (
            "DPM++ 2M SDE",
            SamplerKind::DpmPp2mSde,
            SigmaSchedule::Default,
        ),
        (
            "DPM++ 2M SDE Karras",
            SamplerKind::DpmPp2mSde,
            SigmaSchedule::Karras,
        ),
        (
            "dpm++2m_sde",
            SamplerKind::DpmPp2mSde,
            SigmaSchedule::Default,
        ),
        (
            "k_dpmpp_2m_sde_ka",
            SamplerKind::DpmPp2mSde,
            SigmaSchedule::Karras,
        ),
        ("Euler Karras", SamplerKind::Euler, SigmaSchedule::Karras),
        (
            "Euler Exponential",
            SamplerKind::Euler,
            SigmaSchedule::Exponential,
        ),
        (
            "DPM++ 2M SDE Exponential",
            SamplerKind::DpmPp2mSde,
            SigmaSchedule::Exponential,
        ),
        (
            "dpm++2m_exponential",
            SamplerKind::DpmPp2m,
            SigmaSchedule::Exponential,
        ),
        (
            "Euler a SGM Uniform",
            SamplerKind::EulerAncestral,
            SigmaSchedule::SgmUniform,
        ),
        (
            "ddim_sgm_uniform",
            SamplerKind::Ddim,
            SigmaSchedule::SgmUniform,
        ),
        ("LCM", SamplerKind::Lcm, SigmaSchedule::Default),
        ("lcm", SamplerKind::Lcm, SigmaSchedule::Default),
        ("Heun", SamplerKind::Heun, SigmaSchedule::Default),
        ("heun", SamplerKind::Heun, SigmaSchedule::Default),
        ("k_heun", SamplerKind::Heun, SigmaSchedule::Default),
        ("Heun Karras", SamplerKind::Heun, SigmaSchedule::Karras),
        ("DPM2", SamplerKind::Dpm2, SigmaSchedule::Default),
        ("dpm2", SamplerKind::Dpm2, SigmaSchedule::Default),
        ("k_dpm_2", SamplerKind::Dpm2, SigmaSchedule::Default),
        ("DPM2 Karras", SamplerKind::Dpm2, SigmaSchedule::Karras),
        ("k_dpm_2_ka", SamplerKind::Dpm2, SigmaSchedule::Karras),
        ("UniPC", SamplerKind::UniPc, SigmaSchedule::Default),
        ("DPM++ SDE", SamplerKind::DpmPpSde, SigmaSchedule::Default),
        ("k_dpmpp_sde", SamplerKind::DpmPpSde, SigmaSchedule::Default),
        (
            "DPM++ SDE Karras",
            SamplerKind::DpmPpSde,
            SigmaSchedule::Karras,
        ),
        ("unipc", SamplerKind::UniPc, SigmaSchedule::Default),
        (
            "UniPC SGM Uniform",
            SamplerKind::UniPc,
            SigmaSchedule::SgmUniform,
        ),
    ];
    // Every display name parses back to its sampler.
    for kind in SamplerKind::ALL {
        assert_eq!(SamplerSpec::parse(kind.name()).unwrap().kind, kind);
    }
    for (name, kind, schedule) in cases {
        let spec = SamplerSpec::parse(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((spec.kind, spec.schedule), (kind, schedule), "{name}");
        assert_eq!(spec.timestep_spacing, None, "{name}");
    }
    let ddim = SamplerSpec::parse("ddim_trailing").unwrap();
    assert_eq!(
        (ddim.kind, ddim.timestep_spacing),
        (SamplerKind::Ddim, Some(TimestepSpacing::Trailing))
    );

    let err = SamplerSpec::parse("LMS").unwrap_err().to_string();
    for valid in [
        "'LMS'",
        "Heun",
        "DPM2",
        "UniPC",
        "k_dpm_2",
        "Euler a",
        "DPM++ 2M",
        "LCM",
        "euler_a",
        "dpm++2m",
        "ddim_trailing",
    ] {
        assert!(err.contains(valid), "{err} should mention {valid}");
    }
    let err = SamplerSpec::parse("Euler a Karras")
        .unwrap_err()
        .to_string();
    assert!(err.contains("Euler a") && err.contains("Karras"), "{err}");

    let err = SamplerSpec::parse("Euler a Exponential")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Euler a") && err.contains("Exponential"),
        "{err}"
    );

    for (name, schedule) in [
        ("Karras", SigmaSchedule::Karras),
        ("Automatic", SigmaSchedule::Default),
        ("exponential", SigmaSchedule::Exponential),
        ("Exponential", SigmaSchedule::Exponential),
        ("sgm_uniform", SigmaSchedule::SgmUniform),
        ("SGM Uniform", SigmaSchedule::SgmUniform),
        ("SGMUniform", SigmaSchedule::SgmUniform),
    ] {
        assert_eq!(parse_schedule(name).unwrap(), schedule, "{name}");
    }
    for schedule in SigmaSchedule::ALL {
        assert_eq!(parse_schedule(schedule.api_name()).unwrap(), schedule);
        assert_eq!(parse_schedule(schedule.label()).unwrap(), schedule);
    }
    let err = parse_schedule("Beta").unwrap_err().to_string();
    for valid in [
        "'Beta'",
        "Karras",
        "Exponential",
        "SGM Uniform",
        "sgm_uniform",
    ] {
        assert!(err.contains(valid), "{err} should mention {valid}");
    }
    let spec = SamplerSpec::new(SamplerKind::Lcm);
    for schedule in [
        SigmaSchedule::Karras,
        SigmaSchedule::Exponential,
        SigmaSchedule::SgmUniform,
    ] {
        let err = spec.with_schedule(schedule).unwrap_err().to_string();
        assert!(
            err.contains("LCM") && err.contains(schedule.label()),
            "{err}"
        );
    }
    let ddpm = SamplerSpec::new(SamplerKind::Ddpm);
    assert!(ddpm.with_schedule(SigmaSchedule::SgmUniform).is_ok());
    assert!(ddpm.with_schedule(SigmaSchedule::Exponential).is_err());
}

#[test]
fn ddim_trailing_name_overrides_spacing() {
    let cfg = SchedulerConfig::from_json_str(
        r#"{"beta_schedule": "scaled_linear", "beta_start": 0.00085,
        "beta_end": 0.012, "timestep_spacing": "leading", "steps_offset": 1}"#,
    )
    .unwrap();
    let s = build_scheduler(&cfg, &SamplerSpec::parse("ddim_trailing").unwrap(), 4).unwrap();
    assert_eq!(s.timesteps(), &[999.0, 749.0, 499.0, 249.0]);
}

fn config_error(json: &str) -> String {
    SchedulerConfig::from_json_str(json)
        .and_then(|cfg| {
            build_scheduler(&cfg, &SamplerSpec::parse("Euler").unwrap(), 20).map(|_| ())
        })
        .unwrap_err()
        .to_string()
}

#[test]
fn bad_configs_name_the_field() {
    let cases = [
        (
            r#"{"beta_schedule": "cosine"}"#,
            ["beta_schedule", "scaled_linear"],
        ),
        (r#"{"prediction_type": 3}"#, ["prediction_type", "string"]),
        (
            r#"{"num_train_timesteps": -5}"#,
            ["num_train_timesteps", "non-negative integer"],
        ),
        (r#"{"beta_start": "small"}"#, ["beta_start", "number"]),
        (r#"{"beta_end": 1.5}"#, ["beta_end", "[0, 1)"]),
        (
            r#"{"timestep_spacing": "even"}"#,
            ["timestep_spacing", "trailing"],
        ),
        (
            r#"{"use_karras_sigmas": "yes"}"#,
            ["use_karras_sigmas", "true or false"],
        ),
        (
            r#"{"trained_betas": [0.1, 0.2]}"#,
            ["trained_betas", "num_train_timesteps"],
        ),
        (r#"{"use_beta_sigmas": true}"#, ["use_beta_sigmas", "Euler"]),
        (
            r#"{"use_karras_sigmas": true, "use_exponential_sigmas": true}"#,
            ["use_exponential_sigmas", "use_karras_sigmas"],
        ),
        (
            r#"{"interpolation_type": "log_linear"}"#,
            ["interpolation_type", "not supported"],
        ),
        (
            r#"{"final_sigmas_type": "one"}"#,
            ["final_sigmas_type", "sigma_min"],
        ),
        (r#"[1, 2]"#, ["JSON object", "list"]),
        (r#"{"beta_start": "#, ["not valid JSON", ""]),
    ];
    for (json, needles) in cases {
        let err = config_error(json);
        for n in needles {
            assert!(
                err.contains(n),
                "{json}: error '{err}' should mention '{n}'"
            );
        }
    }
    let cfg = SchedulerConfig::from_json_str(r#"{"thresholding": true}"#).unwrap();
    let err = build_scheduler(&cfg, &SamplerSpec::parse("DDIM").unwrap(), 20)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("thresholding") && err.contains("DDIM"),
        "{err}"
    );
    // The sampler's name picks DPMSolverMultistep's algorithm, whatever the config says.
    let cfg = SchedulerConfig::from_json_str(r#"{"algorithm_type": "sde-dpmsolver++"}"#).unwrap();
    for (name, kind) in [
        ("DPM++ 2M", SamplerKind::DpmPp2m),
        ("DPM++ 2M SDE", SamplerKind::DpmPp2mSde),
    ] {
        let s = build_scheduler(&cfg, &SamplerSpec::parse(name).unwrap(), 20).unwrap();
        assert_eq!(s.kind(), kind, "{name}");
    }
    let cfg = SchedulerConfig::from_json_str(r#"{"steps_offset": 900}"#).unwrap();
    let err = build_scheduler(&cfg, &SamplerSpec::parse("DDIM").unwrap(), 4)
        .unwrap_err()
        .to_string();
    assert!(err.contains("steps_offset"), "{err}");
}

#[test]
fn bad_arguments_are_errors_not_panics() {
    let cfg = SchedulerConfig::from_json_str("{}").unwrap();
    for kind in SamplerKind::ALL {
        let spec = SamplerSpec::new(kind);
        assert!(
            build_scheduler(&cfg, &spec, 0).is_err(),
            "{kind:?} with 0 steps"
        );
        assert!(
            build_scheduler(&cfg, &spec, 5000).is_err(),
            "{kind:?} with 5000 steps"
        );
        let mut s = build_scheduler(&cfg, &spec, 4).unwrap();
        // 4 steps are 4 entries, or 7 for the two-evaluation samplers.
        let len = s.timesteps().len();
        assert_eq!(len, 4 * s.order() - (s.order() - 1), "{kind:?}");
        let mut rng = TorchCpuRng::new(0);
        let x = vec![0.5f32; 8];
        assert!(s.scale_model_input(&x, len).is_err());
        assert!(s.step(&x, len, &x, &mut rng).is_err());
        assert!(s.step(&x[..7], 0, &x, &mut rng).is_err());
        assert!(s.add_noise(&x, &x[..3], 0).is_err());
        assert!(s.add_noise(&x, &x, len + 5).is_err());
    }
    assert!(img2img_start(10, 0.0).is_err());
    assert!(img2img_start(10, 1.5).is_err());
    assert!(img2img_start(10, f64::NAN).is_err());
    assert!(img2img_start(10, 0.05).is_err());
    assert_eq!(img2img_start(10, 1.0).unwrap(), 0);
}

#[test]
fn dpm_solver_refuses_steps_out_of_order() {
    let cfg = SchedulerConfig::from_json_str("{}").unwrap();
    let mut s = build_scheduler(&cfg, &SamplerSpec::parse("DPM++ 2M").unwrap(), 10).unwrap();
    let mut rng = TorchCpuRng::new(0);
    let x = vec![0.1f32; 4];
    s.step(&x, 3, &x, &mut rng).unwrap();
    let err = s.step(&x, 5, &x, &mut rng).unwrap_err().to_string();
    assert!(
        err.contains("expected step 4") && err.contains("got 5"),
        "{err}"
    );
}

#[test]
fn two_stage_samplers_take_whole_steps_in_order() {
    let cfg = SchedulerConfig::from_json_str("{}").unwrap();
    for name in ["Heun", "DPM2", "UniPC", "DPM++ SDE"] {
        let mut s = build_scheduler(&cfg, &SamplerSpec::parse(name).unwrap(), 10).unwrap();
        s.set_noise_seeds(&[0]);
        let mut rng = TorchCpuRng::new(0);
        let x = vec![0.1f32; 4];
        if s.order() == 2 {
            // A step begins at an even entry (img2img too); its second stage follows it.
            let err = s.step(&x, 3, &x, &mut rng).unwrap_err().to_string();
            assert!(err.contains(name) && err.contains("got 3"), "{err}");
        }
        s.step(&x, 2, &x, &mut rng).unwrap();
        let err = s.step(&x, 4, &x, &mut rng).unwrap_err().to_string();
        assert!(
            err.contains("expected step 3") && err.contains("got 4"),
            "{err}"
        );
    }
}

#[test]
fn dpm_sde_needs_its_noise_seeds() {
    let cfg = SchedulerConfig::from_json_str("{}").unwrap();
    let spec = SamplerSpec::parse("DPM++ SDE").unwrap();
    let x = vec![0.1f32; 4];
    let mut s = build_scheduler(&cfg, &spec, 4).unwrap();
    let err = s
        .step(&x, 0, &x, &mut TorchCpuRng::new(0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("set_noise_seeds"), "{err}");
    // One tree per image: a sample that the seeds do not divide is refused.
    let mut s = build_scheduler(&cfg, &spec, 4).unwrap();
    s.set_noise_seeds(&[1, 2, 3]);
    let err = s
        .step(&x, 0, &x, &mut TorchCpuRng::new(0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("noise seed"), "{err}");
    // Different seeds, different noise.
    let mut a = build_scheduler(&cfg, &spec, 4).unwrap();
    a.set_noise_seeds(&[1]);
    let mut b = build_scheduler(&cfg, &spec, 4).unwrap();
    b.set_noise_seeds(&[2]);
    let mut rng = TorchCpuRng::new(0);
    assert_ne!(
        a.step(&x, 0, &x, &mut rng).unwrap(),
        b.step(&x, 0, &x, &mut rng).unwrap()
    );
}

#[test]
fn ddim_eta_draws_noise_and_is_validated() {
    let cfg = SchedulerConfig::from_json_str(r#"{"clip_sample": false}"#).unwrap();
    let mut spec = SamplerSpec::parse("DDIM").unwrap();
    spec.eta = -1.0;
    let err = build_scheduler(&cfg, &spec, 4).unwrap_err().to_string();
    assert!(err.contains("eta"), "{err}");
    // eta = 0 is deterministic; eta = 1 adds noise from the stream.
    spec.eta = 0.0;
    let x = vec![0.3f32; 16];
    let mut a = build_scheduler(&cfg, &spec, 4).unwrap();
    let quiet = a.step(&x, 0, &x, &mut TorchCpuRng::new(1)).unwrap();
    spec.eta = 1.0;
    let mut b = build_scheduler(&cfg, &spec, 4).unwrap();
    let noisy = b.step(&x, 0, &x, &mut TorchCpuRng::new(1)).unwrap();
    assert!(quiet.iter().all(|v| *v == quiet[0]));
    assert!(noisy.iter().any(|v| *v != noisy[0]));
}
