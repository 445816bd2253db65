//! A ControlNet unit's control mode, as the A1111 ControlNet extension names and runs them
//! (`scripts/controlnet.py` sets `soft_injection = mode != Balanced` and
//! `cfg_injection = mode == "ControlNet is more important"`; `scripts/hook.py` applies them),
//! plus diffusers' own `guess_mode`, which the CLI's `--guess-mode` keeps.

use std::fmt;

use crate::controlnet::ResidualCurve;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ControlMode {
    /// The residuals at the unit's weight on both halves of classifier-free guidance.
    #[default]
    Balanced,
    /// "My prompt is more important": soft injection, the residuals weakened towards the
    /// high-resolution skips (`0.825 ** (12 - i)`), on both halves.
    Prompt,
    /// "ControlNet is more important": soft injection, and the residuals for the conditional
    /// half only (cfg injection), so guidance pushes towards the control.
    ControlNet,
    /// diffusers' `guess_mode`: the conditional half only, scaled by `logspace(-1, 0)`.
    DiffusersGuess,
}

/// The extension's names, in its enum's order (the API also takes the index).
const NAMES: [&str; 3] = [
    "Balanced",
    "My prompt is more important",
    "ControlNet is more important",
];

impl ControlMode {
    /// The extension's `control_mode` by name or index (0, 1, 2).
    pub fn from_a1111(value: &str) -> Option<ControlMode> {
        let i = NAMES
            .iter()
            .position(|n| *n == value)
            .or_else(|| value.parse::<usize>().ok())?;
        [
            ControlMode::Balanced,
            ControlMode::Prompt,
            ControlMode::ControlNet,
        ]
        .get(i)
        .copied()
    }

    pub fn names() -> &'static [&'static str] {
        &NAMES
    }

    /// The extension's name for the infotext; diffusers' guess mode is written as the closest
    /// one, "ControlNet is more important".
    pub fn a1111_name(self) -> &'static str {
        match self {
            ControlMode::Balanced => NAMES[0],
            ControlMode::Prompt => NAMES[1],
            ControlMode::ControlNet | ControlMode::DiffusersGuess => NAMES[2],
        }
    }

    /// Whether only the conditional half of guidance gets the residuals.
    pub fn conditional_only(self) -> bool {
        matches!(self, ControlMode::ControlNet | ControlMode::DiffusersGuess)
    }

    /// The per-residual curve. `forced_soft`: the extension forces soft injection for canny
    /// and mlsd maps in a hires-fix pass ("significantly reduce artifacts").
    pub fn curve(self, forced_soft: bool) -> ResidualCurve {
        match self {
            ControlMode::DiffusersGuess => ResidualCurve::Guess,
            ControlMode::Prompt | ControlMode::ControlNet => ResidualCurve::Soft,
            ControlMode::Balanced if forced_soft => ResidualCurve::Soft,
            ControlMode::Balanced => ResidualCurve::Flat,
        }
    }
}

impl fmt::Display for ControlMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.a1111_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_indices_parse() {
        for (i, name) in NAMES.iter().enumerate() {
            let m = ControlMode::from_a1111(name).unwrap();
            assert_eq!(ControlMode::from_a1111(&i.to_string()), Some(m));
            assert_eq!(m.a1111_name(), *name);
        }
        assert_eq!(ControlMode::from_a1111("3"), None);
        assert_eq!(ControlMode::from_a1111("balanced"), None);
    }

    #[test]
    fn modes_set_soft_and_cfg_injection_as_the_extension_does() {
        use ResidualCurve::*;
        let table = [
            (ControlMode::Balanced, Flat, false),
            (ControlMode::Prompt, Soft, false),
            (ControlMode::ControlNet, Soft, true),
            (ControlMode::DiffusersGuess, Guess, true),
        ];
        for (m, curve, cond_only) in table {
            assert_eq!(
                (m.curve(false), m.conditional_only()),
                (curve, cond_only),
                "{m:?}"
            );
        }
        assert_eq!(ControlMode::Balanced.curve(true), Soft);
        assert_eq!(ControlMode::DiffusersGuess.curve(true), Guess);
    }
}
