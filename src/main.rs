use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use torchfit::config::Config;
use torchfit::dist::Launch;
use torchfit::exit;
use torchfit::train::{train, Outcome, TrainOptions};

/// Train multi-layer perceptrons on libtorch from YAML configs.
#[derive(Parser)]
#[command(name = "torchfit", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model; without CONFIG, the embedded Keras example (configs/keras_example.yaml).
    Train(TrainArgs),
    /// Print the resolved config (defaults filled in, overrides applied) as YAML.
    Config(ConfigArgs),
    /// Predict with a trained model (a run directory or a model.pt) on a CSV, Parquet or .npy file.
    Predict(PredictArgs),
    /// Report a run's loss and metrics on a new labelled CSV or Parquet file.
    Evaluate(EvaluateArgs),
    /// Write the token ids a text model (data.text) takes for a file's text columns, as an
    /// int64 .npy array [rows, text columns * max_length].
    Tokenize(TokenizeArgs),
    /// Re-export a run, or other weights of its shapes, as TorchScript, safetensors or ONNX, or
    /// as a Triton model repository.
    Export(ExportArgs),
    /// Serve a trained model over HTTP: Open Inference Protocol (KServe V2), /predict, /metrics.
    Serve(ServeArgs),
    /// Search hyperparameters: grid or random trials of a base config, optionally with
    /// ASHA early termination, on this machine or as a Slurm job array.
    Sweep(SweepArgs),
    /// List runs in a table (status, epochs, best and last of a metric, time, device),
    /// best first; or, with --plot, draw their curves of one metric in one PNG.
    Runs(RunsArgs),
    /// Show torchfit and libtorch versions, CUDA devices, cuDNN and threads.
    Info,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct SweepArgs {
    #[command(subcommand)]
    action: Option<SweepAction>,
    /// The sweep file (YAML: base, method, parameters, metric, ...; see docs/sweeps.md).
    #[arg(required = true)]
    sweep: Option<PathBuf>,
    /// Override a key of the base config for every trial: a dotted path and a YAML value.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Workers (trials at once) [default: the cores here; with Slurm, one per trial].
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
    /// The sweep directory [default: sweeps/<the sweep file's name>]; the same command on
    /// an existing one continues it.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Where the workers run: here, or as a Slurm job array (sbatch).
    #[arg(long, value_enum, default_value = "local")]
    launcher: LauncherArg,
    /// With --launcher slurm: a line for the batch script, e.g. --sbatch-arg=--time=01:00:00.
    #[arg(long = "sbatch-arg", value_name = "ARG", allow_hyphen_values = true)]
    sbatch_args: Vec<String>,
    /// With --launcher slurm: write DIR/sweep.sbatch without submitting it.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
struct RunsArgs {
    /// Run directories, directories holding runs, or sweep directories, searched 4 levels
    /// down [default: runs].
    dirs: Vec<PathBuf>,
    /// The metric (a metrics.csv column) whose best and last values the table shows and
    /// sorts by [default: val_loss when a run has it, else loss].
    #[arg(long, value_name = "NAME")]
    metric: Option<String>,
    /// How to print the table.
    #[arg(long, value_enum, default_value = "table")]
    format: RunsFormat,
    /// Instead of the table, draw this metric per epoch of every run (the 12 best) in one PNG.
    #[arg(long, value_name = "METRIC", conflicts_with_all = ["metric", "format"])]
    plot: Option<String>,
    /// With --plot: the PNG to write.
    #[arg(long, short, value_name = "FILE", requires = "plot", default_value = "runs.png")]
    output: PathBuf,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RunsFormat {
    Table,
    Csv,
    Json,
}

#[derive(Subcommand)]
enum SweepAction {
    /// Print a sweep's results table so far.
    Status {
        /// The sweep directory.
        dir: PathBuf,
    },
    /// Train the sweep's trials until none is left (what each local worker and each Slurm
    /// array task runs).
    #[command(hide = true)]
    Worker {
        dir: PathBuf,
        /// Workers on this machine: each takes its share of the cores.
        #[arg(long, default_value_t = 1)]
        jobs: usize,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LauncherArg {
    Local,
    Slurm,
}

#[derive(Args)]
struct ConfigArgs {
    /// YAML config file; the embedded Keras example when omitted. A table file (.csv, .tsv,
    /// .parquet, .pq) with --target instead trains the recommended default for tables
    /// (configs/table.yaml) on it.
    config: Option<PathBuf>,
    /// Override a config key: a dotted path and a YAML value, e.g. training.epochs=5.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// With a table file: the column to predict.
    #[arg(long, value_name = "COLUMN")]
    target: Option<String>,
    /// With a table file: classification or regression [default: from the target column:
    /// text, booleans or at most 10 distinct whole numbers are classes].
    #[arg(long, value_enum, requires = "target")]
    task: Option<TaskArg>,
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Where to train: auto (CUDA when available), cpu, cuda or cuda:N. Overrides `device`.
    #[arg(long, value_parser = parse_device)]
    device: Option<torchfit::config::DeviceChoice>,
    /// Run directory [default: runs/<name>-<UTC timestamp>].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Seed for data, initialisation and shuffling (a whole number >= 0). Overrides `seed`.
    #[arg(long, allow_negative_numbers = true, value_parser = parse_seed)]
    seed: Option<u64>,
    /// Print only the final summary.
    #[arg(long, short)]
    quiet: bool,
    /// Continue the run in DIR from its last checkpoint, with its own config (--set may
    /// change training.* and device, e.g. training.epochs to train further).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "out", "seed", "target"])]
    resume: Option<PathBuf>,
}

#[derive(Args)]
struct PredictArgs {
    /// The model: a run directory written by `torchfit train` (its model.pt), or a model.pt
    /// written by `torchfit train` or `torchfit export`.
    model: PathBuf,
    /// Features: a CSV file, read with the delimiter the model was trained with
    /// (data.delimiter), whose header names the model's feature columns (other columns, such
    /// as the target, are ignored); a Parquet file (.parquet, .pq), its columns picked by
    /// name likewise; or a .npy array [samples, features]. A file whose header names none of
    /// the features, or a CSV file with no header, is taken in column order.
    input: PathBuf,
    /// Write the predictions (CSV) here instead of to standard output.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Classification: also write each class's probability (columns p_<label>).
    #[arg(long)]
    proba: bool,
    /// Copy these input columns (an id, say) into the output, first and in the order given,
    /// as the input holds them. Repeat the flag or separate names with commas: --keep id
    /// --keep name, or --keep id,name.
    #[arg(long, value_name = "COLUMN", value_delimiter = ',')]
    keep: Vec<String>,
}

#[derive(Args)]
struct TokenizeArgs {
    /// The model: a run directory or a model.pt of a run with data.text.
    model: PathBuf,
    /// A CSV (read with the model's data.delimiter) or Parquet file with the text columns.
    input: PathBuf,
    /// The .npy file to write.
    #[arg(long, short, value_name = "FILE")]
    output: PathBuf,
}

#[derive(Args)]
struct EvaluateArgs {
    /// The run: a run directory written by `torchfit train`, or the model.pt inside one.
    run: PathBuf,
    /// A labelled CSV file, read with the run's delimiter (data.delimiter), or a Parquet
    /// file (.parquet, .pq), whose header row or schema names the run's feature columns and
    /// its target. Also accepted as --data FILE.
    #[arg(value_name = "FILE", required_unless_present = "data")]
    file: Option<PathBuf>,
    /// The labelled data file, as FILE.
    #[arg(long, value_name = "FILE", conflicts_with = "file")]
    data: Option<PathBuf>,
    /// The label column, when it is not named as in training.
    #[arg(long, value_name = "COLUMN")]
    target: Option<String>,
    /// Evaluate these weights instead of the run's (a safetensors file of the same names and
    /// shapes, such as checkpoint/best.safetensors); an unfinished run needs them.
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// text: a `name value` line per metric, then for a classifier the confusion matrix
    /// and a per-class report laid out as scikit-learn's classification_report. json: the
    /// same as one JSON object (docs/tracking.md).
    #[arg(long, value_enum, default_value = "text")]
    format: ReportFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ReportFormat {
    Text,
    Json,
}

#[derive(Args)]
struct ExportArgs {
    /// The run: a run directory written by `torchfit train`, or the model.pt inside one.
    run: PathBuf,
    /// What to write [default: what --output's extension says (.pt, .pth, .ts: torchscript;
    /// .safetensors: safetensors; .onnx: onnx), else torchscript]. onnx: an ONNX model
    /// (opset 17) with the preprocessing inside (docs/interop.md). triton: a Triton model
    /// repository in the folder --output (REPO/<name>/config.pbtxt and REPO/<name>/1/model.pt).
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Where to write it [default: the run's own model.pt or weights.safetensors, or
    /// model.onnx in the run directory; required with --weights].
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Export these weights instead of the run's (a safetensors file of the same names and
    /// shapes, such as checkpoint/last.safetensors of an interrupted run).
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
}

#[derive(Args)]
struct ServeArgs {
    /// The model: a run directory written by `torchfit train` (its model.pt), or a model.pt.
    model: PathBuf,
    /// The address to listen on; anything but 127.0.0.1 opens the model to the network.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The port to listen on (0: any free one; the start-up line on standard error says which).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The model's name in V2 URLs (/v2/models/NAME/infer) [default: the run's config `name`].
    #[arg(long)]
    name: Option<String>,
    /// Where the model runs: cpu, cuda, cuda:N or auto (CUDA when available). The CPU by
    /// default: for an MLP and the few rows of a request, copies to and from a GPU cost
    /// more than the forward pass they would speed up.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: torchfit::config::DeviceChoice,
    /// Dynamic batching: the most rows in one forward pass (a larger request runs alone).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    max_batch: u64,
    /// Dynamic batching: how long the first request of a batch may wait for others, in
    /// milliseconds (0: batch only the requests already waiting, as Triton's default does).
    #[arg(long, default_value_t = 0.0, value_name = "MS", value_parser = parse_seconds_or_ms)]
    max_delay_ms: f64,
    /// The largest request body, in bytes (larger ones get 413) [default: 16777216, 16 MiB].
    #[arg(long, default_value_t = 16 << 20, value_name = "BYTES", hide_default_value = true)]
    max_body: usize,
    /// Seconds a client may take to send a request's head, and then its body (slower ones
    /// are cut off, or get 408).
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS", value_parser = parse_seconds_or_ms)]
    read_timeout: f64,
    /// Connections served at once; further clients wait to be accepted until one closes.
    #[arg(long, default_value_t = 1024, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,
    /// No access log (one JSON line per request on standard error).
    #[arg(long, short)]
    quiet: bool,
}

/// `--device`, as the config's `device` reads it.
fn parse_device(text: &str) -> Result<torchfit::config::DeviceChoice, String> {
    text.parse()
}

/// A duration option: a finite number >= 0 (the unit is the option's).
fn parse_seconds_or_ms(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v < 1e9 => Ok(v),
        _ => Err(format!("expected a number >= 0, got {text:?}")),
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    Torchscript,
    Safetensors,
    Onnx,
    Triton,
}

/// `--seed`: clap's own message for `-1` would suggest `-- -1`, which makes it a config path.
fn parse_seed(text: &str) -> Result<u64, String> {
    text.trim().parse().map_err(|_| format!("the seed must be a whole number >= 0, got {text:?}"))
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TaskArg {
    Classification,
    Regression,
}

impl ConfigArgs {
    fn load(&self) -> anyhow::Result<Config> {
        let (config, note) = self.load_with(&self.set)?;
        if let Some(note) = note {
            eprintln!("{note}");
        }
        Ok(config)
    }

    /// The config, with `overrides` (`--set`s and their shorthands): a config file's, or the
    /// table shortcut's for a table file and `--target`, with the line saying what the
    /// shortcut decided.
    fn load_with(&self, overrides: &[String]) -> anyhow::Result<(Config, Option<String>)> {
        let table = self.config.as_deref().filter(|p| torchfit::shortcut::is_table(p));
        match (table, &self.target) {
            (Some(path), Some(target)) => {
                let task = self.task.map(|t| match t {
                    TaskArg::Classification => torchfit::config::Task::Classification,
                    TaskArg::Regression => torchfit::config::Task::Regression,
                });
                let (config, note) = torchfit::shortcut::config(path, target, task, overrides)?;
                Ok((config, Some(note)))
            }
            (Some(path), None) => Err(anyhow::anyhow!(
                "{} is a table, not a config: name the column to predict with --target COLUMN",
                path.display()
            )),
            (None, Some(_)) => Err(anyhow::anyhow!(
                "--target applies to a table file (torchfit train data.csv --target COLUMN); a config names it as data.target"
            )),
            (None, None) => {
                torchfit::data::note_config_file(self.config.as_deref());
                Ok((Config::load(self.config.as_deref(), overrides)?, None))
            }
        }
    }
}

fn run(cli: Cli, launch: Launch, started: Instant) -> anyhow::Result<()> {
    // For the test that a panic is reported as an internal error.
    if std::env::var("TORCHFIT_FAULT").as_deref() == Ok("panic") {
        panic!("injected by TORCHFIT_FAULT=panic");
    }
    // Written with `?` rather than println!, which panics when the reader has gone.
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Train(args) => {
            // --device and --seed are shorthands for --set device=... and --set seed=...
            let mut overrides = args.config.set.clone();
            overrides.extend(args.device.map(|d| format!("device={d}")));
            overrides.extend(args.seed.map(|s| format!("seed={s}")));
            let config = match &args.resume {
                Some(run_dir) => torchfit::train::resume_config(run_dir, &overrides)?,
                None => {
                    let (config, note) = args.config.load_with(&overrides)?;
                    if let Some(note) = note.filter(|_| !args.quiet && launch.rank == 0) {
                        eprintln!("{note}");
                    }
                    config
                }
            };
            let resume = args.resume.is_some();
            let run_dir = args.resume.or(args.out);
            let options = TrainOptions { run_dir, resume, quiet: args.quiet, started, launch, pause_after: None };
            match train(&config, &options)? {
                Outcome::Trained(summary) => writeln!(out, "{}", summary.describe())?,
                Outcome::AlreadyFinished(message) if options.launch.rank == 0 => writeln!(out, "{message}")?,
                Outcome::AlreadyFinished(_) | Outcome::Follower => {}
            }
        }
        Command::Config(args) => write!(out, "{}", args.load()?.to_yaml()?)?,
        Command::Predict(args) => {
            let options = torchfit::predict::PredictOptions {
                output: args.output.as_deref(),
                proba: args.proba,
                keep: &args.keep,
            };
            torchfit::predict::predict(&args.model, &args.input, &options, &mut out)?
        }
        Command::Tokenize(args) => {
            let [rows, width] = torchfit::predict::tokenize(&args.model, &args.input, &args.output)?;
            eprintln!("torchfit: wrote {} ({rows} rows x {width} ids)", args.output.display());
        }
        Command::Evaluate(args) => {
            // clap has made sure that one of the two is given.
            let data = args.file.or(args.data).unwrap_or_default();
            let evaluation =
                torchfit::predict::evaluate(&args.run, &data, args.weights.as_deref(), args.target.as_deref())?;
            match args.format {
                ReportFormat::Text => write!(out, "{}", evaluation.text())?,
                ReportFormat::Json => writeln!(out, "{:#}", evaluation.json())?,
            }
        }
        Command::Export(args) if matches!(args.format, Some(FormatArg::Triton)) => {
            let Some(repo) = &args.output else {
                anyhow::bail!("--format triton writes a model repository: pass --output REPO_DIR");
            };
            let written = torchfit::triton::export_repository(&args.run, args.weights.as_deref(), repo)?;
            writeln!(out, "wrote {}", written.display())?;
        }
        Command::Export(args) => {
            let format = args.format.map(|f| match f {
                FormatArg::Torchscript => torchfit::export::Format::Torchscript,
                FormatArg::Onnx => torchfit::export::Format::Onnx,
                FormatArg::Safetensors | FormatArg::Triton => torchfit::export::Format::Safetensors,
            });
            let written =
                torchfit::export::export_run(&args.run, format, args.weights.as_deref(), args.output.as_deref())?;
            writeln!(out, "wrote {}", written.display())?;
        }
        Command::Serve(args) => torchfit::serve::serve(torchfit::serve::Options {
            model: args.model,
            host: args.host,
            port: args.port,
            name: args.name,
            device: args.device,
            max_batch: args.max_batch as usize,
            max_delay: Duration::from_secs_f64(args.max_delay_ms / 1000.0),
            limits: torchfit::serve::Limits {
                max_body: args.max_body,
                read_timeout: Duration::from_secs_f64(args.read_timeout.max(0.001)),
            },
            max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
            quiet: args.quiet,
        })?,
        Command::Sweep(args) => match (args.action, args.sweep) {
            (Some(SweepAction::Status { dir }), _) => torchfit::sweep::status(&dir, &mut out)?,
            (Some(SweepAction::Worker { dir, jobs }), _) => torchfit::sweep::worker(&dir, jobs)?,
            (None, sweep) => {
                let options = torchfit::sweep::SweepOptions {
                    file: sweep.unwrap_or_default(),
                    set: args.set,
                    jobs: args.jobs,
                    out: args.out,
                    launcher: match args.launcher {
                        LauncherArg::Local => torchfit::sweep::Launcher::Local,
                        LauncherArg::Slurm => torchfit::sweep::Launcher::Slurm,
                    },
                    sbatch_args: args.sbatch_args,
                    dry_run: args.dry_run,
                    command: std::env::args().map(|a| shell_word(&a)).collect::<Vec<_>>().join(" "),
                };
                torchfit::sweep::run(&options, &mut out)?
            }
        },
        Command::Runs(args) => torchfit::runs::runs(
            &torchfit::runs::Options {
                dirs: args.dirs,
                metric: args.metric,
                format: match args.format {
                    RunsFormat::Table => torchfit::runs::Format::Table,
                    RunsFormat::Csv => torchfit::runs::Format::Csv,
                    RunsFormat::Json => torchfit::runs::Format::Json,
                },
                plot: args.plot,
                output: Some(args.output),
            },
            &mut out,
        )?,
        Command::Info => writeln!(out, "{}", torchfit::device::info())?,
    }
    Ok(())
}

/// A command-line word as a shell reads it back, for "continue with: ..." messages.
fn shell_word(word: &str) -> String {
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:@,".contains(c)) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// A command-line error on one line, as every other error is (`--help` and `--version` print
/// as clap prints them); clap's status, 2.
fn usage_error(err: clap::Error) -> u8 {
    use clap::error::ErrorKind;
    if matches!(err.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
        || matches!(err.kind(), ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand)
    {
        err.exit()
    }
    let text = err.render().to_string();
    // clap's lines: "error: ...", detail lines, then a usage and a help hint after a blank.
    let words: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|line| !line.starts_with("Usage:") && !line.starts_with("For more information"))
        .filter(|line| !line.is_empty() && !line.starts_with("tip:"))
        .collect();
    let message = words.join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    eprintln!("torchfit: {message} (see --help)");
    2
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    let kind = |e: &(dyn std::error::Error + 'static)| e.downcast_ref::<std::io::Error>().map(std::io::Error::kind);
    err.chain().any(|e| kind(e) == Some(std::io::ErrorKind::BrokenPipe))
}

fn main() {
    exit::now(status())
}

/// Runs the command line; the process's exit status.
fn status() -> u8 {
    // Before anything asks libtorch about CUDA (see torchfit::cuda).
    torchfit::cuda::load_backend();
    torchfit::device::flush_denormals();
    let started = Instant::now();
    // A panic is a bug in torchfit, not bad input: say so on one line, with the message and
    // where, instead of a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let message = info.payload_as_str().unwrap_or("no message").replace('\n', " ");
        let at = info.location().map(|l| format!(" (at {}:{})", l.file(), l.line())).unwrap_or_default();
        eprintln!("torchfit: internal error, please report it: {message}{at}");
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(err),
    };
    // Started by torchrun or Slurm: which of the processes this is, for every error's first
    // words, and torchrun's error file.
    let launch = match Launch::detect() {
        Ok(launch) => launch,
        Err(err) => {
            eprintln!("torchfit: {err:#}");
            return 2;
        }
    };
    let (rank, distributed, for_errors) = (launch.rank, launch.is_distributed(), launch.clone());
    match std::panic::catch_unwind(|| run(cli, launch, started)) {
        Ok(Ok(())) => 0,
        // A reader that stopped reading (`torchfit predict ... | head`) is not an error.
        Ok(Err(err)) if is_broken_pipe(&err) => 0,
        Ok(Err(err)) => {
            let message = exit::one_line(&err);
            let message = if distributed { format!("rank {rank}: {message}") } else { message };
            for_errors.write_error_file(&message);
            eprintln!("torchfit: {message}");
            exit::code(&err)
        }
        Err(_) => exit::INTERNAL_ERROR,
    }
}
