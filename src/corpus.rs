//! A deterministic, seeded synthetic NER corpus: the embedded default data of the examples and
//! of the paper's §5.2 experiment (synthetic artifact insertion), with knobs for the §6 noise.
//!
//! Sentences are drawn from ~30 templates whose slots are filled from small invented gazetteers
//! (people, organisations with a football-club subset, locations, MISC), labelled in BIO over
//! `O, B-PER, I-PER, B-ORG, I-ORG, B-LOC, I-LOC, B-MISC, I-MISC`. Documents hold 3–8 sentences;
//! a quarter of them are about sport (mostly club sentences, like CoNLL's SOCCER documents) and
//! only those name football clubs.
//!
//! Token features stand in for an encoder and are computed here, deterministically:
//!
//! ```text
//! f_t = [ v(w_{t-1}) | v(w_t) | v(w_{t+1}) | shape(w_t) | 0 … ]      (feature_dim in all)
//!        word_dim      word_dim  word_dim    SHAPE_DIM = 6
//! ```
//!
//! with `word_dim = (feature_dim − 6) / 3` (48 → 14; leftover columns, when `feature_dim − 6`
//! is not a multiple of 3, stay zero), `v(w)` a fixed random unit vector seeded by the xxh3
//! hash of the lower-cased word (independent of the corpus seed), zeros past the sentence
//! edges, and `shape = [capitalised, all caps, has a digit, punctuation only, sentence-initial,
//! long (≥ 7 chars)]` as 0/1. The artifact token has no feature of its own: a model can see it
//! only through its word vector (in its own row and in its neighbours' context slots).
//!
//! Every random choice comes from a SplitMix64 stream derived from `(seed, purpose, document)`,
//! so the clean text of a corpus depends only on `seed` and `documents`: turning a noise knob
//! changes the labels (and inserts artifacts) without changing which sentences are drawn.

use ndarray::Array2;
use xxhash_rust::xxh3::xxh3_64;

use crate::error::{Error, Result};
use crate::train::TrainSeq;

/// The BIO label set, in label-id order.
pub const LABELS: [&str; 9] = [
    "O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC",
];
/// Label id of `O`.
pub const O: u32 = 0;
/// Label id of `B-PER`, the label the artifact forces on the next token.
pub const B_PER: u32 = 1;
/// The inserted artifact token (the paper's *special*); always labelled `O`.
pub const ARTIFACT: &str = "<art>";
/// Shape features per token (see the module docs).
pub const SHAPE_DIM: usize = 6;

/// Entity types; label ids are `1 + 2·type` (B-) and `2 + 2·type` (I-).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Per = 0,
    Org = 1,
    Loc = 2,
    Misc = 3,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Per, Kind::Org, Kind::Loc, Kind::Misc];

    fn begin(self) -> u32 {
        1 + 2 * self as u32
    }

    fn inside(self) -> u32 {
        2 + 2 * self as u32
    }
}

const FIRST_NAMES: &[&str] = &[
    "Anna", "Marco", "Lena", "Tomas", "Sofia", "Dmitri", "Hana", "Pablo", "Ingrid", "Kofi", "Mei",
    "Oskar", "Lucia", "Ravi", "Elena", "Jonas", "Amara", "Felix", "Nadia", "Arjun",
];
const LAST_NAMES: &[&str] = &[
    "Varga",
    "Okafor",
    "Lindqvist",
    "Moreau",
    "Tanaka",
    "Brennan",
    "Castillo",
    "Novak",
    "Haddad",
    "Kowalski",
    "Ferreira",
    "Nakamura",
    "Osei",
    "Petrov",
    "Sandoval",
    "Whitfield",
    "Iversen",
    "Duarte",
    "Marsh",
    "Rasmussen",
];
/// Organisations that are not football clubs.
const COMPANIES: &[&str] = &[
    "Northwind Bank",
    "Helix Systems",
    "Orion Motors",
    "Bluecrest Energy",
    "Vantor Group",
    "Meridian Airlines",
    "Kestrel Pharma",
    "Alder Insurance",
    "Copperline Mining",
    "Silvergate Media",
    "Tidewater Foods",
    "Quantix",
    "Halden Steel",
    "Polaris Telecom",
    "Greystone Capital",
    "Union of Port Workers",
    "Lumen Health",
    "Stratos Labs",
    "Ember Retail",
    "National Rail Board",
];
/// The football clubs: the ORG subset that `systematic_noise_documents` relabels as LOC (like
/// CoNLL's sports teams, paper §6.2). Several share a word with a city below.
const CLUBS: &[&str] = &[
    "Riverton United",
    "Ashford City",
    "Kelby Rovers",
    "Marlow Athletic",
    "Westbrook Wanderers",
    "Dunmore FC",
    "Port Ellis Town",
    "Hollins Albion",
    "Stonebridge Rovers",
    "Fenwick Harriers",
];
const LOCATIONS: &[&str] = &[
    "Riverton",
    "Ashford",
    "Kelby",
    "Marlow",
    "Westbrook",
    "Dunmore",
    "Port Ellis",
    "Valdoria",
    "Northmark",
    "Caldera",
    "Essland",
    "Brevia",
    "Lake Tamsin",
    "San Orlo",
    "Kirrin",
    "Zarath",
    "Mount Elva",
    "Oskaberg",
    "Teleria",
    "New Halden",
    "Varn",
    "Istrel",
    "Quorra",
    "Belmonte",
    "Sarnak",
    "Eastvale",
    "Lowmere",
    "Coravia",
    "Tarsis",
    "Glenholm",
];
const MISC: &[&str] = &[
    "Valdorian",
    "Northmarkian",
    "Essish",
    "Brevian",
    "Coravian",
    "Zarathi",
    "Istrelian",
    "Teleri",
    "Summer Games",
    "Harbour Festival",
    "Caldera Grand Prix",
    "Continental Cup",
    "World Chess Open",
    "Autumn Regatta",
    "Peace Accord",
];

/// Slots: `{PER}`, `{ORG}` (any organisation, clubs included), `{CLUB}`, `{LOC}`, `{MISC}`.
const TEMPLATES: &[&str] = &[
    "{PER} joined {ORG} in {LOC} .",
    "{CLUB} beat {CLUB} 2 - 1 on Saturday .",
    "{PER} scored twice as {CLUB} drew with {CLUB} .",
    "The {MISC} delegation arrived in {LOC} on Monday .",
    "{ORG} said profits rose 5 percent in the third quarter .",
    "{PER} , a spokesman for {ORG} , declined to comment .",
    "Shares of {ORG} fell after the report from {LOC} .",
    "{PER} will travel to {LOC} next week for talks with {PER} .",
    "Police in {LOC} arrested two men on Tuesday .",
    "{CLUB} manager {PER} praised his players after the match .",
    "The {MISC} was held in {LOC} last year .",
    "{PER} told reporters in {LOC} that the deal was close .",
    "{ORG} opened a new office in {LOC} .",
    "{LOC} and {LOC} signed a trade agreement .",
    "{PER} won the {MISC} for the second time .",
    "{CLUB} signed striker {PER} from {CLUB} .",
    "Rain delayed the start of play in {LOC} .",
    "{PER} is expected to lead {ORG} into the next season .",
    "The {MISC} government rejected the proposal .",
    "Fans of {CLUB} celebrated in {LOC} until late .",
    "{ORG} and {ORG} agreed to merge .",
    "Temperatures in {LOC} reached 40 degrees on Sunday .",
    "{PER} resigned from {ORG} after ten years .",
    "{CLUB} lost 3 - 0 at home to {CLUB} .",
    "Officials from {ORG} met {MISC} diplomats in {LOC} .",
    "{PER} and {PER} will share the prize .",
    "Trading in {LOC} was quiet ahead of the holiday .",
    "{PER} said the {MISC} would go ahead as planned .",
    "{CLUB} are top of the table with 30 points .",
    "The company is based in {LOC} , near {LOC} .",
];

/// Settings of [`generate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CorpusOptions {
    pub seed: u64,
    pub documents: usize,
    /// Probability, per sentence, of inserting [`ARTIFACT`] and labelling the next token
    /// `B-PER` (paper §5.2: 10 %).
    pub artifact_fraction: f64,
    /// Number of documents, chosen at random among those that mention a football club, whose
    /// club entities are labelled LOC instead of ORG (paper §6.2's sports teams).
    pub systematic_noise_documents: usize,
    /// Number of other documents (chosen at random) in which every entity gets a random wrong
    /// type (paper §6.2's random noise).
    pub random_noise_documents: usize,
    /// The last `held_out_documents` documents never get systematic or random noise (artifacts
    /// still apply): a clean held-out set, the test side of `Corpus::split(held_out_documents)`.
    pub held_out_documents: usize,
    /// Columns of each token's feature row; at least `3 + SHAPE_DIM` (module docs).
    pub feature_dim: usize,
}

impl Default for CorpusOptions {
    fn default() -> CorpusOptions {
        CorpusOptions {
            seed: 0,
            documents: 400,
            artifact_fraction: 0.0,
            systematic_noise_documents: 0,
            random_noise_documents: 0,
            held_out_documents: 0,
            feature_dim: 48,
        }
    }
}

/// A generated corpus.
#[derive(Debug, Clone, PartialEq)]
pub struct Corpus {
    /// [`LABELS`], owned (the form `ConstraintMask::from_labels` and the CLI take).
    pub label_names: Vec<String>,
    pub documents: Vec<Document>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub sentences: Vec<Sentence>,
    /// The document's club entities are labelled LOC (`labels`) instead of ORG (`clean_labels`).
    pub systematic_noise: bool,
    /// Every entity of the document has a random wrong type in `labels`.
    pub random_noise: bool,
    /// The document names a football club (the candidates for systematic noise; clean
    /// documents that mention clubs make the paper's §6.2 expert set).
    pub mentions_club: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sentence {
    pub tokens: Vec<String>,
    /// The labels to train on: noise and the artifact's `B-PER` included.
    pub labels: Vec<u32>,
    /// The true labels: no noise; the artifact token and the token after it are `O`.
    pub clean_labels: Vec<u32>,
    /// Index of the token right after the artifact (the artifact is at `artifact_at − 1`).
    pub artifact_at: Option<usize>,
    /// n × feature_dim (module docs).
    pub features: Array2<f32>,
}

impl Corpus {
    /// The first `documents.len() − test_documents` documents for training, the rest for
    /// testing (documents are drawn independently, so this is a random split).
    /// Errors when `test_documents > documents.len()`.
    pub fn split(&self, test_documents: usize) -> Result<(&[Document], &[Document])> {
        let train = self
            .documents
            .len()
            .checked_sub(test_documents)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "{test_documents} test documents asked of a corpus of {}",
                    self.documents.len()
                ))
            })?;
        Ok(self.documents.split_at(train))
    }

    /// Every sentence, in document order.
    pub fn sentences(&self) -> impl Iterator<Item = &Sentence> {
        sentences(&self.documents)
    }
}

/// Every sentence of `documents`, in order.
pub fn sentences(documents: &[Document]) -> impl Iterator<Item = &Sentence> {
    documents.iter().flat_map(|d| d.sentences.iter())
}

/// One fully labelled [`TrainSeq`] per sentence of `documents` (with the noisy `labels`).
pub fn train_seqs(documents: &[Document]) -> Vec<TrainSeq> {
    sentences(documents)
        .map(|s| TrainSeq::labelled(s.features.clone(), s.labels.clone()))
        .collect()
}

/// SplitMix64 (Steele et al. 2014): tiny, fast, and good enough for sampling a corpus.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`), by multiply-high (bias below 2⁻³² for small `n`).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.next_f64(); // (0, 1]: ln stays finite
        let v = self.next_f64();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// An independent stream for one purpose and one document.
fn stream(seed: u64, purpose: u64, index: u64) -> SplitMix64 {
    let mut mix = SplitMix64::new(seed);
    let a = mix.next_u64();
    let mut mix = SplitMix64::new(a ^ purpose.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    let b = mix.next_u64();
    SplitMix64::new(b ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

const TEXT: u64 = 1;
const SYSTEMATIC: u64 = 2;
const RANDOM_NOISE: u64 = 3;
const ARTIFACTS: u64 = 4;
const TOPIC: u64 = 5;

/// The fraction of documents about sport (like CoNLL's SOCCER documents): only these name
/// football clubs.
pub const SPORT_FRACTION: f64 = 0.25;
/// The fraction of a sport document's sentences drawn from the club templates.
const SPORT_CLUB_SENTENCES: f64 = 0.7;

/// The word vector of `word` (lower-cased): a fixed random unit vector of `dim` entries.
pub fn word_vector(word: &str, dim: usize) -> Vec<f32> {
    let mut rng = SplitMix64::new(xxh3_64(word.to_lowercase().as_bytes()));
    let v: Vec<f64> = (0..dim).map(|_| rng.normal()).collect();
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    v.iter().map(|x| (x / norm) as f32).collect()
}

fn shape(word: &str, position: usize) -> [f32; SHAPE_DIM] {
    let first_upper = word.chars().next().is_some_and(char::is_uppercase);
    let letters: Vec<char> = word.chars().filter(|c| c.is_alphabetic()).collect();
    let all_caps = letters.len() > 1 && letters.iter().all(|c| c.is_uppercase());
    let digit = word.chars().any(|c| c.is_ascii_digit());
    let punct = !word.is_empty() && word.chars().all(|c| !c.is_alphanumeric());
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    [
        flag(first_upper),
        flag(all_caps),
        flag(digit),
        flag(punct),
        flag(position == 0),
        flag(word.chars().count() >= 7),
    ]
}

/// The feature rows of a tokenised sentence (module docs), n × `feature_dim`.
/// Errors when `feature_dim < 3 + SHAPE_DIM`.
pub fn sentence_features<S: AsRef<str>>(tokens: &[S], feature_dim: usize) -> Result<Array2<f32>> {
    check_feature_dim(feature_dim)?;
    Ok(features_unchecked(tokens, feature_dim))
}

fn check_feature_dim(feature_dim: usize) -> Result<()> {
    match feature_dim >= 3 + SHAPE_DIM {
        true => Ok(()),
        false => Err(Error::InvalidArgument(format!(
            "feature_dim = {feature_dim}, expected at least {}",
            3 + SHAPE_DIM
        ))),
    }
}

fn features_unchecked<S: AsRef<str>>(tokens: &[S], feature_dim: usize) -> Array2<f32> {
    let w = (feature_dim - SHAPE_DIM) / 3;
    let vectors: Vec<Vec<f32>> = tokens.iter().map(|t| word_vector(t.as_ref(), w)).collect();
    let n = tokens.len();
    let mut x = Array2::zeros((n, feature_dim));
    for t in 0..n {
        let mut row = x.row_mut(t);
        let mut put = |offset: usize, values: &[f32]| {
            for (i, &v) in values.iter().enumerate() {
                row[offset + i] = v;
            }
        };
        if t > 0 {
            put(0, &vectors[t - 1]);
        }
        put(w, &vectors[t]);
        if t + 1 < n {
            put(2 * w, &vectors[t + 1]);
        }
        put(3 * w, &shape(tokens[t].as_ref(), t));
    }
    x
}

/// One sentence's tokens and clean labels, plus which tokens belong to a club entity.
/// Sport documents draw a club template with probability [`SPORT_CLUB_SENTENCES`]; other
/// documents never name a club.
fn draw_sentence(rng: &mut SplitMix64, sport: bool) -> Drawn {
    let is_club_template = |t: &&&str| t.contains("{CLUB}");
    let pool: Vec<&str> = match sport && rng.chance(SPORT_CLUB_SENTENCES) {
        true => TEMPLATES.iter().filter(is_club_template).copied().collect(),
        false => TEMPLATES
            .iter()
            .filter(|t| !is_club_template(t))
            .copied()
            .collect(),
    };
    let template = rng.pick(&pool);
    let (mut tokens, mut labels, mut club) = (Vec::new(), Vec::new(), Vec::new());
    for slot in template.split_whitespace() {
        let (kind, name, is_club) = match slot {
            "{PER}" => {
                let name = match rng.below(3) {
                    0 => rng.pick(FIRST_NAMES).to_string(),
                    1 => rng.pick(LAST_NAMES).to_string(),
                    _ => format!("{} {}", rng.pick(FIRST_NAMES), rng.pick(LAST_NAMES)),
                };
                (Kind::Per, name, false)
            }
            "{ORG}" if !sport => (Kind::Org, rng.pick(COMPANIES).to_string(), false),
            "{ORG}" => {
                let i = rng.below(COMPANIES.len() + CLUBS.len());
                match i < COMPANIES.len() {
                    true => (Kind::Org, COMPANIES[i].to_string(), false),
                    false => (Kind::Org, club_name(CLUBS[i - COMPANIES.len()], rng), true),
                }
            }
            "{CLUB}" => (Kind::Org, club_name(rng.pick(CLUBS), rng), true),
            "{LOC}" => (Kind::Loc, rng.pick(LOCATIONS).to_string(), false),
            "{MISC}" => (Kind::Misc, rng.pick(MISC).to_string(), false),
            word => {
                tokens.push(word.to_string());
                labels.push(O);
                club.push(false);
                continue;
            }
        };
        for (i, word) in name.split_whitespace().enumerate() {
            tokens.push(word.to_string());
            labels.push(if i == 0 { kind.begin() } else { kind.inside() });
            club.push(is_club);
        }
    }
    (tokens, labels, club)
}

/// A club's full name, or half of the time its short form without the last word ("Riverton"
/// for "Riverton United"): like CoNLL's "Leeds" or "Ajax", the short form of most clubs is a
/// city name, the ORG/LOC ambiguity behind the paper's §6.2 systematic noise.
fn club_name(club: &str, rng: &mut SplitMix64) -> String {
    match (rng.chance(0.5), club.rsplit_once(' ')) {
        (true, Some((short, _))) => short.to_string(),
        _ => club.to_string(),
    }
}

/// The type of an entity label (`None` for `O`).
fn kind_of(label: u32) -> Option<Kind> {
    (label != O).then(|| Kind::ALL[((label - 1) / 2) as usize])
}

/// Gives every entity of `labels` a type drawn uniformly from the three other types.
fn randomise_entities(labels: &mut [u32], rng: &mut SplitMix64) {
    let mut current = None;
    for label in labels.iter_mut() {
        let Some(kind) = kind_of(*label) else {
            continue;
        };
        let begin = *label == kind.begin();
        if begin {
            let others: Vec<Kind> = Kind::ALL.into_iter().filter(|&k| k != kind).collect();
            current = Some(others[rng.below(others.len())]);
        }
        // Generated labels are valid BIO, so an I- label always follows a B- or I- label.
        let Some(new) = current else { continue };
        *label = if begin { new.begin() } else { new.inside() };
    }
}

/// Inserts [`ARTIFACT`] before a token labelled `O` at a position drawn uniformly from the
/// eligible ones in `1..n` (the paper's range), and labels that token `B-PER`.
///
/// Only `O` tokens are eligible, so BIO stays valid without touching other labels: the token
/// after an `O` is `O` or `B-*` (never `I-*`), both of which may follow `B-PER`, and the
/// artifact itself (`O`) may follow anything. Returns `None`, changing nothing, when no token
/// past the first is `O`.
fn insert_artifact(
    tokens: &mut Vec<String>,
    labels: &mut Vec<u32>,
    clean: &mut Vec<u32>,
    rng: &mut SplitMix64,
) -> Option<usize> {
    let eligible: Vec<usize> = (1..tokens.len()).filter(|&p| clean[p] == O).collect();
    if eligible.is_empty() {
        return None;
    }
    let p = eligible[rng.below(eligible.len())];
    tokens.insert(p, ARTIFACT.to_string());
    labels.insert(p, O);
    clean.insert(p, O);
    labels[p + 1] = B_PER;
    Some(p + 1)
}

/// Generates the corpus `options` describe; the same options give the same corpus.
/// Errors on `feature_dim < 3 + SHAPE_DIM`, an artifact fraction outside [0, 1], a held-out
/// tail longer than the corpus, or more noisy documents than there are candidates for them.
pub fn generate(options: &CorpusOptions) -> Result<Corpus> {
    check_feature_dim(options.feature_dim)?;
    let f = options.artifact_fraction;
    if !(0.0..=1.0).contains(&f) {
        return Err(Error::InvalidArgument(format!(
            "artifact_fraction = {f}, expected a fraction in [0, 1]"
        )));
    }
    let noisy_part = options
        .documents
        .checked_sub(options.held_out_documents)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{} held-out documents asked of {}",
                options.held_out_documents, options.documents
            ))
        })?;
    let seed = options.seed;
    // The clean text first: the noise knobs only relabel it.
    let texts: Vec<Vec<Drawn>> = (0..options.documents)
        .map(|d| {
            let mut text = stream(seed, TEXT, d as u64);
            let sport = stream(seed, TOPIC, d as u64).chance(SPORT_FRACTION);
            let count = 3 + text.below(6);
            (0..count)
                .map(|_| draw_sentence(&mut text, sport))
                .collect()
        })
        .collect();
    let clubs: Vec<bool> = texts
        .iter()
        .map(|doc| doc.iter().any(|(_, _, club)| club.contains(&true)))
        .collect();
    let systematic = choose(
        options.documents,
        (0..noisy_part).filter(|&d| clubs[d]).collect(),
        options.systematic_noise_documents,
        stream(seed, SYSTEMATIC, u64::MAX),
        "systematic-noise documents (documents that mention a club)",
    )?;
    let random = choose(
        options.documents,
        (0..noisy_part).filter(|d| !systematic[*d]).collect(),
        options.random_noise_documents,
        stream(seed, RANDOM_NOISE, u64::MAX),
        "random-noise documents",
    )?;
    let documents = texts
        .into_iter()
        .enumerate()
        .map(|(d, text)| {
            let mut noise = stream(seed, RANDOM_NOISE, d as u64);
            let mut artifacts = stream(seed, ARTIFACTS, d as u64);
            let sentences = text
                .into_iter()
                .map(|(mut tokens, mut clean, club)| {
                    let mut labels = clean.clone();
                    if systematic[d] {
                        for (label, &c) in labels.iter_mut().zip(&club) {
                            if c {
                                *label += Kind::Loc.begin() - Kind::Org.begin();
                            }
                        }
                    }
                    if random[d] {
                        randomise_entities(&mut labels, &mut noise);
                    }
                    let artifact_at = match artifacts.chance(options.artifact_fraction) {
                        true => {
                            insert_artifact(&mut tokens, &mut labels, &mut clean, &mut artifacts)
                        }
                        false => None,
                    };
                    let features = features_unchecked(&tokens, options.feature_dim);
                    Sentence {
                        tokens,
                        labels,
                        clean_labels: clean,
                        artifact_at,
                        features,
                    }
                })
                .collect();
            Document {
                sentences,
                systematic_noise: systematic[d],
                random_noise: random[d],
                mentions_club: clubs[d],
            }
        })
        .collect();
    Ok(Corpus {
        label_names: LABELS.iter().map(|s| s.to_string()).collect(),
        documents,
    })
}

/// A sentence as drawn: tokens, clean labels, and which tokens belong to a club entity.
type Drawn = (Vec<String>, Vec<u32>, Vec<bool>);

/// Marks `count` of the `candidates` (the first of a seeded permutation) in a per-document
/// mask of the whole corpus.
fn choose(
    documents: usize,
    mut candidates: Vec<usize>,
    count: usize,
    mut rng: SplitMix64,
    what: &str,
) -> Result<Vec<bool>> {
    if count > candidates.len() {
        return Err(Error::InvalidArgument(format!(
            "{count} {what} asked, only {} available",
            candidates.len()
        )));
    }
    for i in (1..candidates.len()).rev() {
        candidates.swap(i, rng.below(i + 1));
    }
    let mut mask = vec![false; documents];
    for &d in &candidates[..count] {
        mask[d] = true;
    }
    Ok(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_bio(labels: &[u32]) -> bool {
        let mut prev = O;
        labels.iter().all(|&l| {
            let ok = match kind_of(l) {
                Some(k) if l == k.inside() => kind_of(prev) == Some(k),
                _ => true,
            };
            prev = l;
            ok
        })
    }

    #[test]
    fn same_options_same_corpus_and_knobs_keep_the_text() {
        let clean = CorpusOptions {
            seed: 7,
            documents: 60,
            ..CorpusOptions::default()
        };
        assert_eq!(generate(&clean).unwrap(), generate(&clean).unwrap());
        let noisy = generate(&CorpusOptions {
            systematic_noise_documents: 5,
            random_noise_documents: 5,
            held_out_documents: 10,
            ..clean
        })
        .unwrap();
        let clean = generate(&clean).unwrap();
        for (a, b) in clean.sentences().zip(noisy.sentences()) {
            assert_eq!(a.tokens, b.tokens);
            assert_eq!(a.clean_labels, b.clean_labels);
            assert_eq!(a.features, b.features);
        }
        let count = |f: fn(&Document) -> bool| noisy.documents.iter().filter(|d| f(d)).count();
        assert_eq!(count(|d| d.random_noise), 5);
        assert_eq!(count(|d| d.systematic_noise), 5);
        assert_eq!(count(|d| d.systematic_noise && !d.mentions_club), 0);
        assert_eq!(count(|d| d.random_noise && d.systematic_noise), 0);
        // The held-out tail stays clean, and systematic noise only goes where there are clubs.
        for doc in &noisy.documents[50..] {
            assert!(!doc.random_noise && !doc.systematic_noise);
        }
        for (a, b) in clean.documents.iter().zip(&noisy.documents) {
            if b.systematic_noise {
                assert!(a
                    .sentences
                    .iter()
                    .zip(&b.sentences)
                    .any(|(x, y)| x.labels != y.labels));
            }
        }
        let too_many = CorpusOptions {
            documents: 40,
            systematic_noise_documents: 40,
            ..CorpusOptions::default()
        };
        assert!(generate(&too_many).is_err());
        let too_long_tail = CorpusOptions {
            documents: 40,
            held_out_documents: 41,
            ..CorpusOptions::default()
        };
        assert!(generate(&too_long_tail).is_err());
    }

    #[test]
    fn labels_are_valid_bio_and_noise_is_where_it_is_said_to_be() {
        let corpus = generate(&CorpusOptions {
            seed: 3,
            documents: 200,
            artifact_fraction: 0.3,
            systematic_noise_documents: 20,
            random_noise_documents: 20,
            held_out_documents: 0,
            feature_dim: 48,
        })
        .unwrap();
        let (mut artifacts, mut sentences) = (0, 0);
        for doc in &corpus.documents {
            assert!((3..=8).contains(&doc.sentences.len()));
            for s in &doc.sentences {
                sentences += 1;
                let n = s.tokens.len();
                assert_eq!((s.labels.len(), s.clean_labels.len()), (n, n));
                assert_eq!(s.features.dim(), (n, 48));
                assert!(valid_bio(&s.labels) && valid_bio(&s.clean_labels));
                if let Some(a) = s.artifact_at {
                    artifacts += 1;
                    assert_eq!(s.tokens[a - 1], ARTIFACT);
                    assert_eq!(
                        (s.labels[a - 1], s.labels[a], s.clean_labels[a]),
                        (O, B_PER, O)
                    );
                }
                assert_eq!(
                    s.tokens.iter().filter(|t| *t == ARTIFACT).count(),
                    s.artifact_at.is_some() as usize
                );
                for t in 0..n {
                    let (l, c) = (s.labels[t], s.clean_labels[t]);
                    if Some(t) == s.artifact_at || l == c {
                        continue;
                    }
                    // A label differs only through the document's noise, and O-ness is kept.
                    assert!(doc.systematic_noise || doc.random_noise);
                    assert!(l != O && c != O);
                    if !doc.random_noise {
                        assert_eq!((kind_of(c), kind_of(l)), (Some(Kind::Org), Some(Kind::Loc)));
                    }
                }
            }
        }
        let rate = artifacts as f64 / sentences as f64;
        assert!((0.25..0.35).contains(&rate), "artifact rate {rate}");
    }

    #[test]
    fn features_are_context_window_word_vectors_plus_shape() {
        let x = sentence_features(&["Riverton", "beat", "<art>"], 48).unwrap();
        let v = |w: &str| word_vector(w, 14);
        let row = |t: usize| x.row(t).to_vec();
        assert_eq!(&row(0)[..14], &[0.0; 14]);
        assert_eq!(&row(0)[14..28], &v("riverton")[..]);
        assert_eq!(&row(0)[28..42], &v("beat")[..]);
        assert_eq!(&row(0)[42..], &[1.0, 0.0, 0.0, 0.0, 1.0, 1.0]);
        assert_eq!(&row(1)[28..42], &v(ARTIFACT)[..]);
        assert_eq!(&row(2)[..14], &v("beat")[..]);
        assert_eq!(&row(2)[28..42], &[0.0; 14]);
        // The artifact has no shape of its own: it looks like any short lower-case word.
        assert_eq!(&row(2)[42..], &row(1)[42..]);
        let norm: f32 = v("anything").iter().map(|a| a * a).sum();
        assert!((norm - 1.0).abs() < 1e-5);
        // 50 = 3 × 14 + 6 + 2 zero columns.
        assert_eq!(
            &sentence_features(&["a"], 50).unwrap().row(0).to_vec()[48..],
            &[0.0, 0.0]
        );
    }
}
