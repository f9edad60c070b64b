//! `seginf index curvature`: a K-FAC or EK-FAC inverse Hessian of the training objective, fitted
//! on the model's training data and saved for `seginf query --curvature`.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use seginf::hessian::{Factored, KroneckerInverse};

use crate::args::ModelDataArgs;
use crate::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Kronecker-factored emission block with factored damping (a test token stays one test
    /// column: queries cost about the identity's).
    Kfac,
    /// K-FAC's eigenbases with the true curvature along each direction (C test columns).
    Ekfac,
}

/// Fit a K-FAC or EK-FAC inverse Hessian on the training data and save it.
///
/// The Hessian is that of the model's training objective, mean NLL + (l2/2)‖θ‖², at the
/// model's parameters: the emission block Kronecker-factored, the transition/start/end block
/// exact. `seginf query --curvature FILE` then scores with −g_testᵀ (H + damping·I)⁻¹ g_train
/// instead of the identity. The file records the model it was fitted for: a query with another
/// model refuses it.
#[derive(Debug, Args)]
#[command(long_about)]
pub struct CurvatureArgs {
    #[command(flatten)]
    pub data: ModelDataArgs,
    /// Which approximation.
    #[arg(long, value_enum, default_value_t = ModeArg::Kfac)]
    pub mode: ModeArg,
    /// Added to the Hessian's diagonal (with l2) before inverting.
    #[arg(long, default_value_t = 1e-3)]
    pub damping: f64,
    /// The L2 strength of the training objective (default: the one `seginf train` recorded in
    /// the model).
    #[arg(long)]
    pub l2: Option<f64>,
    /// Where to save the fitted curvature (safetensors).
    #[arg(long, value_name = "CURVATURE.safetensors")]
    pub out: PathBuf,
}

pub fn run(args: &CurvatureArgs) -> Result<()> {
    let (model, conll, features) = args.data.load()?;
    let l2 = model.l2(args.l2)?;
    let data = crate::train::sequences(&conll, model.labels(), features)?;
    let mode = match args.mode {
        ModeArg::Kfac => Factored::Kfac,
        ModeArg::Ekfac => Factored::Ekfac,
    };
    let fitted = KroneckerInverse::fit(model.crf.clone(), &data, l2, args.damping, mode)?;
    fitted.save(&args.out)?;
    writeln!(
        std::io::stdout().lock(),
        "fitted {} on {} sentences ({} tokens), l2 {l2}, damping {}: saved {}",
        match mode {
            Factored::Kfac => "K-FAC",
            Factored::Ekfac => "EK-FAC",
        },
        data.len(),
        conll.num_tokens(),
        args.damping,
        args.out.display()
    )?;
    Ok(())
}
