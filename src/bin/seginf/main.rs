//! `seginf`: train a CRF tagger on CoNLL files, index its training tokens, and ask which
//! training labels support or oppose a test prediction (segment influence, Jain et al. 2022).
//!
//! A client of the public Rust API like any other: every command reads files with
//! `seginf::data`, computes with the library, and writes JSON lines or text.

mod args;
mod corpus;
mod curvature;
mod demo;
mod index;
mod inspect;
mod load;
mod progress;
mod query;
mod rank;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// What every command returns: the error is printed as `seginf: <message>` with exit code 1.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const ABOUT: &str = "Segment influence for linear-chain CRF taggers: which training labels \
support or oppose a test prediction (Jain et al., Findings of EMNLP 2022).";

const LONG_ABOUT: &str = "Segment influence for linear-chain CRF taggers: which training labels \
support or oppose a test prediction (Jain et al., Findings of EMNLP 2022).

Typical use: `seginf train` a CRF on a CoNLL file (with token features from your encoder as \
.npy or safetensors), `seginf index build` its training tokens, then `seginf query` a test \
token, span or entity (with `seginf index curvature` for a K-FAC/EK-FAC Hessian instead of the \
identity); `seginf rank-noise` ranks the training documents by how likely their \
labels are wrong. `seginf demo` runs the paper's artifact experiment end to end.

Scores: negative = supporting (the training label lowered the test segment's loss), \
positive = opposing. Index doc ids encode (document << 32) | sentence, both counted from 0 \
in file order.";

#[derive(Debug, Parser)]
#[command(name = "seginf", version, about = ABOUT, long_about = LONG_ABOUT)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Train(train::TrainArgs),
    /// Build (and save) the influence index of a model's training tokens.
    #[command(subcommand)]
    Index(index::IndexCommand),
    Query(query::QueryArgs),
    RankNoise(rank::RankArgs),
    Inspect(inspect::InspectArgs),
    Demo(demo::DemoArgs),
    Corpus(corpus::CorpusArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => train::run(&a),
        Command::Index(index::IndexCommand::Build(a)) => index::build(&a),
        Command::Index(index::IndexCommand::Curvature(a)) => curvature::run(&a),
        Command::Query(a) => query::run(&a),
        Command::RankNoise(a) => rank::run(&a),
        Command::Inspect(a) => inspect::run(&a),
        Command::Demo(a) => demo::run(&a),
        Command::Corpus(a) => corpus::run(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `seginf query ... | head` closes stdout early: not a failure.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("seginf: {e}");
            ExitCode::FAILURE
        }
    }
}
