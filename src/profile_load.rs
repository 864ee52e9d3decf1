//! Loading the GPU profile a scenario names in `cluster.profile`: a shipped profile (`h100-datasheet`, ...) or
//! a profile file, its path relative to the scenario file.

use miette::miette;
use moesim_calibrate::profile::ProfileError;
use moesim_calibrate::{MeasuredCost, Profile, profiles};
use moesim_sim::Scenario;
use std::path::Path;

/// Resolves a profile name: shipped profiles first, then a file relative to `base_dir`.
pub fn resolve(name: &str, base_dir: &Path) -> Result<Profile, ProfileError> {
    if let Some(p) = profiles::shipped(name) {
        return Ok(p);
    }
    let path = base_dir.join(name);
    if path.is_file() {
        return Profile::load(&path);
    }
    Err(ProfileError::Unknown {
        name: name.to_string(),
        known: profiles::shipped_names().join(", "),
        path: path.display().to_string(),
    })
}

/// The cost model of the scenario's `cluster.profile`, or `None` when it names none (the cluster's roofline
/// fields price the work then).
pub fn cost_model(scenario_path: &Path, s: &Scenario) -> miette::Result<Option<MeasuredCost>> {
    let Some(name) = s.cluster.profile.as_deref() else {
        return Ok(None);
    };
    let base = scenario_path.parent().unwrap_or(Path::new("."));
    let p = resolve(name, base)
        .map_err(|e| miette!("{}: cluster.profile: {e}", scenario_path.display()))?;
    Ok(Some(MeasuredCost::from_profile(&p)))
}
