//! Inference timesteps per `timestep_spacing`, as each diffusers class computes them. The classes
//! differ in small ways (DPM-Solver spaces n+1 points and drops the last; Euler keeps fractional
//! "linspace" timesteps that DDIM rounds), and every difference changes the schedule.

use super::config::TimestepSpacing;
use super::error::SchedulerError;
use super::numpy;

/// Timesteps of Euler, Euler a and DDIM, largest first. With `round_linspace` false the
/// "linspace" values stay fractional (Euler's float32 timesteps).
pub(crate) fn spaced(
    spacing: TimestepSpacing,
    num_train: usize,
    steps: usize,
    steps_offset: usize,
    round_linspace: bool,
) -> Vec<f64> {
    let t = num_train as f64;
    match spacing {
        TimestepSpacing::Linspace => {
            let mut v = numpy::linspace(0.0, t - 1.0, steps, true);
            if round_linspace {
                v.iter_mut().for_each(|x| *x = x.round_ties_even());
            }
            v.reverse();
            v
        }
        TimestepSpacing::Leading => {
            let ratio = num_train / steps;
            (0..steps)
                .rev()
                .map(|i| (i * ratio + steps_offset) as f64)
                .collect()
        }
        TimestepSpacing::Trailing => numpy::arange(t, 0.0, -(t / steps as f64))
            .into_iter()
            .map(|x| x.round_ties_even() - 1.0)
            .collect(),
    }
}

/// DPM-Solver's timesteps: spaced over `last_timestep` (the train range after lambda clipping)
/// with one extra point that is then dropped, except for "trailing".
pub(crate) fn dpm_solver(
    spacing: TimestepSpacing,
    num_train: usize,
    last_timestep: usize,
    steps: usize,
    steps_offset: usize,
) -> Vec<f64> {
    match spacing {
        TimestepSpacing::Linspace => {
            let mut v = numpy::linspace(0.0, last_timestep as f64 - 1.0, steps + 1, true);
            v.iter_mut().for_each(|x| *x = x.round_ties_even());
            v.reverse();
            v.pop();
            v
        }
        TimestepSpacing::Leading => {
            let ratio = last_timestep / (steps + 1);
            (1..=steps)
                .rev()
                .map(|i| (i * ratio + steps_offset) as f64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = num_train as f64 / steps as f64;
            numpy::arange(last_timestep as f64, 0.0, -ratio)
                .into_iter()
                .map(|x| x.round_ties_even() - 1.0)
                .collect()
        }
    }
}

/// LCM's timesteps: `original_steps` evenly spaced distillation timesteps, of which `steps` are
/// picked at evenly spaced (floored) positions, largest first.
pub(crate) fn lcm(
    num_train: usize,
    original_steps: usize,
    steps: usize,
) -> Result<Vec<f64>, SchedulerError> {
    if original_steps == 0 || original_steps > num_train {
        return Err(SchedulerError::FieldValue {
            field: "original_inference_steps",
            message: format!("{original_steps} must be in 1..={num_train} (num_train_timesteps)"),
        });
    }
    if steps > original_steps {
        return Err(SchedulerError::Steps {
            steps,
            reason: format!("LCM allows at most original_inference_steps = {original_steps} steps"),
        });
    }
    let k = num_train / original_steps;
    let origin: Vec<usize> = (1..=original_steps).rev().map(|i| i * k - 1).collect();
    Ok(numpy::linspace(0.0, origin.len() as f64, steps, false)
        .into_iter()
        .map(|x| origin[x.floor() as usize] as f64)
        .collect())
}

/// Checks the requested step count before any schedule is built.
pub(crate) fn check_steps(steps: usize, num_train: usize) -> Result<(), SchedulerError> {
    if steps == 0 {
        return Err(SchedulerError::Steps {
            steps,
            reason: "at least one step is needed".into(),
        });
    }
    if steps > num_train {
        return Err(SchedulerError::Steps {
            steps,
            reason: format!("more than num_train_timesteps = {num_train}"),
        });
    }
    Ok(())
}
