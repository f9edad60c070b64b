//! `seginf inspect`: what an index or model file holds.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use seginf::index::IndexInfo;
use seginf::{Crf, LoadOptions, ModelMetadata};
use serde::Serialize;

use crate::Result;

/// Describe an index or model file (told apart by its metadata).
///
/// An index: format version, feature dimension, labels, storage, tokens, sentences, the
/// fingerprint of the CRF it was built for. A model: labels, scheme, feature dimension,
/// which parameter blocks are present, forbidden (-inf) entries, fingerprint, and the
/// training settings `seginf train` recorded. Any safetensors CRF with the default tensor
/// names (weight, bias, transitions, start_transitions, end_transitions) can be inspected.
#[derive(Debug, Args)]
#[command(long_about)]
pub struct InspectArgs {
    /// An index or model file (safetensors).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Report {
    Index {
        format_version: String,
        seginf_version: String,
        num_labels: usize,
        feature_dim: usize,
        num_tokens: usize,
        num_sequences: usize,
        storage: &'static str,
        crf_fingerprint: String,
        file_bytes: u64,
    },
    Model {
        labels: Vec<String>,
        scheme: Option<&'static str>,
        num_labels: usize,
        feature_dim: usize,
        blocks: Vec<&'static str>,
        forbidden_transitions: usize,
        forbidden_starts: usize,
        forbidden_ends: usize,
        fingerprint: String,
        metadata: BTreeMap<String, String>,
    },
}

fn report(path: &std::path::Path) -> Result<Report> {
    // An index's metadata says so; reading its header needs no CRF.
    match IndexInfo::read(path) {
        Ok(i) => {
            return Ok(Report::Index {
                format_version: i.format_version,
                seginf_version: i.seginf_version,
                num_labels: i.num_labels,
                feature_dim: i.feature_dim,
                num_tokens: i.num_tokens,
                num_sequences: i.num_sequences,
                storage: i.storage.name(),
                crf_fingerprint: i.crf_fingerprint,
                file_bytes: i.file_bytes,
            })
        }
        Err(seginf::Error::Io(m)) => return Err(m.into()),
        Err(_) => {}
    }
    let meta = ModelMetadata::read(path)?;
    let crf = Crf::load_safetensors(path, &LoadOptions::default()).map_err(|e| {
        format!(
            "{}: neither a seginf index nor a CRF with the default tensor names ({e})",
            path.display()
        )
    })?;
    let mut blocks = vec!["weight"];
    blocks.extend(crf.bias().map(|_| "bias"));
    blocks.push("transitions");
    blocks.extend(crf.start().map(|_| "start_transitions"));
    blocks.extend(crf.end().map(|_| "end_transitions"));
    let forbidden = |v: Option<&ndarray::Array1<f64>>| {
        v.map_or(0, |v| v.iter().filter(|x| x.is_infinite()).count())
    };
    Ok(Report::Model {
        labels: meta.labels,
        scheme: meta.scheme.map(|s| s.name()),
        num_labels: crf.num_labels(),
        feature_dim: crf.feature_dim(),
        blocks,
        forbidden_transitions: crf.transitions().iter().filter(|x| x.is_infinite()).count(),
        forbidden_starts: forbidden(crf.start()),
        forbidden_ends: forbidden(crf.end()),
        fingerprint: format!("{:016x}", crf.fingerprint()),
        metadata: meta.extra,
    })
}

pub fn run(args: &InspectArgs) -> Result<()> {
    let report = report(&args.file)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(());
    }
    match report {
        Report::Index {
            format_version,
            seginf_version,
            num_labels,
            feature_dim,
            num_tokens,
            num_sequences,
            storage,
            crf_fingerprint,
            file_bytes,
        } => {
            writeln!(out, "{}: seginf index, format version {format_version} (written by seginf {seginf_version})", args.file.display())?;
            writeln!(out, "  tokens           {num_tokens}")?;
            writeln!(out, "  sequences        {num_sequences}")?;
            writeln!(out, "  labels (C)       {num_labels}")?;
            writeln!(out, "  features (d)     {feature_dim}")?;
            writeln!(out, "  storage          {storage}")?;
            writeln!(out, "  CRF fingerprint  {crf_fingerprint}")?;
            writeln!(
                out,
                "  file size        {:.1} MiB",
                file_bytes as f64 / (1 << 20) as f64
            )?;
        }
        Report::Model {
            labels,
            scheme,
            num_labels,
            feature_dim,
            blocks,
            forbidden_transitions,
            forbidden_starts,
            forbidden_ends,
            fingerprint,
            metadata,
        } => {
            writeln!(out, "{}: CRF model", args.file.display())?;
            let names = match labels.is_empty() {
                true => "(no label names recorded)".to_string(),
                false => labels.join(" "),
            };
            writeln!(out, "  labels (C)       {num_labels}: {names}")?;
            writeln!(
                out,
                "  scheme           {}",
                scheme.unwrap_or("(none recorded)")
            )?;
            writeln!(out, "  features (d)     {feature_dim}")?;
            writeln!(out, "  blocks           {}", blocks.join(", "))?;
            writeln!(
                out,
                "  forbidden (-inf) {forbidden_transitions} transitions, {forbidden_starts} starts, {forbidden_ends} ends"
            )?;
            writeln!(out, "  fingerprint      {fingerprint}")?;
            for (k, v) in metadata {
                writeln!(out, "  {k:<16} {v}")?;
            }
        }
    }
    Ok(())
}
