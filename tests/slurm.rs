//! The README's Slurm batch script, submitted with `sbatch --wait` to a running Slurm (CI starts a
//! one-node one with `.ci/slurm.sh`; built with the `mpi` feature). The script is read from
//! README.md between its markers and scaled down by substitutions on that text, each of which
//! must match exactly once: 2 tasks instead of 8, 1 CPU per task instead of 4, no GPU line (the
//! one-node Slurm has none), this build's binary, the folder dataset and the small run of the MPI
//! tests instead of CIFAR-10 at batch 128, a temporary `--out`. Everything else (`srun
//! --kill-on-bad-exit=1 --mpi=pmix`, `--resume`, the other `#SBATCH` lines) is the README's.
//!
//! - The script trains one world of two ranks: both start, rank 0 alone reports and writes,
//!   config.json records 2 ranks, and the checkpoint holds exactly the weights, momentum and
//!   running statistics of `mpirun -n 2` with the same settings.
//! - A rank killed mid-run ends the job within a timeout, srun naming the task and ending the
//!   step itself (`--kill-on-bad-exit`); the last checkpoint loads; the same script submitted again (with fewer epochs, a change `--resume` accepts)
//!   continues from it with two ranks and records the resume in config.json's history.
//!
//! Where no Slurm answers, each test prints why and passes, unless CIFS_WGPU_REQUIRE_SLURM=1 (set
//! by `.ci/slurm.sh run`), where it fails.
#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cifs::checkpoint::load_training;
use engine::Runtime;

#[path = "common/files.rs"]
mod files;
use files::{make_folder, read_json, tmpdir};
#[path = "common/ranks.rs"]
mod ranks;
use ranks::*;

const BEGIN: &str = "<!-- slurm-script: tests/slurm.rs submits this block -->";
const END: &str = "<!-- /slurm-script -->";

/// The cluster's 2 CPUs fit one two-task job: the tests submit one at a time (a second would
/// queue behind the first and run into its time limits).
static CLUSTER: Mutex<()> = Mutex::new(());

/// Whether a Slurm controller answers (`sinfo`), printing why not where none does; fails the
/// test instead where CIFS_WGPU_REQUIRE_SLURM=1.
fn slurm_up() -> bool {
    let required = std::env::var("CIFS_WGPU_REQUIRE_SLURM").is_ok_and(|v| v == "1");
    let why = match Command::new("sinfo").args(["-h", "-o", "%n %t"]).output() {
        Ok(o) if o.status.success() && !o.stdout.is_empty() => {
            eprintln!("Slurm nodes: {}", String::from_utf8_lossy(&o.stdout).trim());
            return true;
        }
        Ok(o) => format!("sinfo failed: {}", String::from_utf8_lossy(&o.stderr).trim().lines().last().unwrap_or("")),
        Err(e) => format!("no sinfo ({e})"),
    };
    assert!(!required, "CIFS_WGPU_REQUIRE_SLURM=1 but no Slurm answers: {why}");
    eprintln!("skipped: no Slurm answers ({why}); `.ci/slurm.sh run cargo test --release --features mpi --test slurm` starts one");
    false
}

/// The batch script of README.md, verbatim: the fenced block between the markers.
fn readme_script() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let inner = readme.split_once(BEGIN).and_then(|(_, rest)| rest.split_once(END)).map(|(inner, _)| inner);
    let inner = inner.unwrap_or_else(|| panic!("README.md has no `{BEGIN}` ... `{END}` around its Slurm script"));
    let body = inner.trim().strip_prefix("```").and_then(|b| b.strip_suffix("```")).expect("one fenced block between the markers");
    body.split_once('\n').expect("a fence line, then the script").1.to_string()
}

/// `text` with its one occurrence of `from` replaced by `to`.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    let n = text.matches(from).count();
    assert_eq!(n, 1, "the README's Slurm script holds `{from}` {n} times, not once: the test scales it down by replacing it\n{text}");
    text.replacen(from, to, 1)
}

/// The README's script scaled down to this machine (see the module's doc): the small run of
/// `train_args` on `data` into `out`, then `extra`.
fn scaled_script(data: &Path, out: &Path, extra: &[&str]) -> String {
    let script = readme_script();
    let gpu_lines: Vec<&str> = script.lines().filter(|l| l.starts_with("#SBATCH --gpus-per-node=")).collect();
    assert_eq!(gpu_lines.len(), 1, "the README's Slurm script has no single `#SBATCH --gpus-per-node=` line:\n{script}");
    let mut s = replace_once(&script, &format!("{}\n", gpu_lines[0]), "");
    s = replace_once(&s, "#SBATCH --ntasks-per-node=8\n", "#SBATCH --ntasks-per-node=2\n");
    s = replace_once(&s, "#SBATCH --cpus-per-task=4\n", "#SBATCH --cpus-per-task=1\n");
    s = replace_once(
        &s,
        "target/release/cifs-wgpu train cifar10",
        &format!("{} --no-tune train folder --data-dir {}", bin(), data.display()),
    );
    let mut small = settings();
    small.extend(extra.iter().map(|a| a.to_string()));
    s = replace_once(&s, "--batch-size 128", &small.join(" "));
    replace_once(&s, "--out runs/cifar10-8gpu", &format!("--out {}", out.display()))
}

/// A submitted job, cancelled when dropped (a test that fails leaves nothing running).
struct Job {
    name: String,
    output: PathBuf,
}

impl Drop for Job {
    fn drop(&mut self) {
        let _ = Command::new("scancel").args(["--name", &self.name]).status();
    }
}

/// `sbatch --wait` of `script` (written to `root/name.sh`), its output to `root/name.out`.
fn submit(script: &str, root: &Path, name: &str) -> (Child, Job) {
    let path = root.join(format!("{name}.sh"));
    std::fs::write(&path, script).unwrap();
    eprintln!("{}:\n{script}", path.display());
    let job = Job { name: format!("cifs-test-{name}-{}", std::process::id()), output: root.join(format!("{name}.out")) };
    let mut c = Command::new("sbatch");
    c.arg("--wait").arg(format!("--job-name={}", job.name)).arg(format!("--output={}", job.output.display()));
    c.arg(format!("--chdir={}", root.display())).arg(&path).env("XDG_RUNTIME_DIR", std::env::temp_dir());
    (spawn(c), job)
}

/// Waits at most `limit` for the job's `sbatch --wait`; its exit status and the job's output.
fn finish(child: Child, job: &Job, limit: Duration) -> (ExitStatus, String) {
    let res = wait_at_most(child, limit, &format!("sbatch --wait ({})", job.name));
    show("sbatch --wait", &res);
    let text = std::fs::read_to_string(&job.output).unwrap_or_default();
    eprintln!("----- {}\n{text}-----", job.output.display());
    (res.status, text)
}

fn count(text: &str, what: &str) -> usize {
    text.lines().filter(|l| l.contains(what)).count()
}

#[test]
fn the_readme_script_trains_one_world_of_two_ranks_as_mpirun_does() {
    let _cluster = CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    if !slurm_up() {
        return;
    }
    let root = tmpdir("slurm-world");
    let (data, by_slurm, by_mpirun) = (root.join("data"), root.join("slurm"), root.join("mpirun"));
    make_folder(&data);
    let (child, job) = submit(&scaled_script(&data, &by_slurm, &["--epochs", "1"]), &root, "world");
    let (status, text) = finish(child, &job, Duration::from_secs(600));
    assert!(status.success(), "the README's Slurm script failed ({status})");
    // Both ranks opened a GPU; rank 0 alone reported the all-reduce and the end.
    assert_eq!(count(&text, "adapter: "), 2, "two ranks start");
    assert_eq!(count(&text, "all-reduce of"), 1, "rank 0 alone reports the epoch's all-reduce");
    assert_eq!(count(&text, "done: 1 epochs"), 1, "rank 0 alone reports the end");
    let config: serde_json::Value = read_json(by_slurm.join("config.json"));
    assert_eq!(config["ranks"], 2, "{config}");
    let metrics = std::fs::read_to_string(by_slurm.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 1, "one line for the one epoch:\n{metrics}");

    let mut c = mpirun(&["-n", "2", bin()]);
    c.args(train_args(&data, &by_mpirun, &["--epochs", "1", "--resume"]));
    let res = wait_at_most(spawn(c), Duration::from_secs(600), "mpirun -n 2 train");
    show("mpirun -n 2 train", &res);
    assert!(res.status.success(), "mpirun -n 2 train failed");
    let rt = Runtime::new(engine::RuntimeOptions::from_env().expect("the environment's settings"))
        .expect("a Vulkan device (lavapipe is enough)");
    let (slurm, mpirun) =
        (checkpoint_state(&rt, &by_slurm.join("last.safetensors")), checkpoint_state(&rt, &by_mpirun.join("last.safetensors")));
    let (err, at) = worst(&slurm, &mpirun);
    eprintln!("srun vs mpirun, two ranks each: {err:.3e} ({at})");
    // The same two processes on the same shares of the same batches: the same bits.
    assert!(slurm == mpirun, "the Slurm run's state differs from mpirun's by {err:.3e} in {at}");
}

/// The pid of the `cifs-wgpu` process that Slurm started as task `task` of a run into `out`.
fn task_pid(task: usize, out: &Path) -> Option<u32> {
    let want = format!("SLURM_PROCID={task}");
    let out = out.display().to_string();
    let exe = std::fs::canonicalize(bin()).unwrap();
    find_process(|pid, environ| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == exe)
            && environ.contains(&want.as_bytes())
            && cmdline.split(|&b| b == 0).any(|a| a == out.as_bytes())
    })
}

#[test]
fn a_killed_rank_ends_the_job_and_the_resubmitted_script_resumes() {
    let _cluster = CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    if !slurm_up() {
        return;
    }
    let root = tmpdir("slurm-kill");
    let (data, out) = (root.join("data"), root.join("run"));
    make_folder(&data);
    let (mut child, job) = submit(&scaled_script(&data, &out, &["--epochs", "30", "--adv", "none", "--eval-every", "30"]), &root, "kill");
    let last = out.join("last.safetensors");
    let start = Instant::now();
    while !last.is_file() {
        if child.try_wait().unwrap().is_some() {
            let (status, _) = finish(child, &job, Duration::ZERO);
            panic!("the job ended ({status}) before its first checkpoint");
        }
        assert!(start.elapsed() < Duration::from_secs(300), "no checkpoint after 300 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let victim = task_pid(1, &out).expect("task 1's process");
    assert!(Command::new("kill").args(["-9", &victim.to_string()]).status().unwrap().success());
    let killed_at = Instant::now();
    let (status, text) = finish(child, &job, Duration::from_secs(60));
    eprintln!("the job ended {:.1} s after task 1 was killed", killed_at.elapsed().as_secs_f64());
    assert!(!status.success(), "a job with a killed task must fail");
    assert!(text.contains("task 1: Killed"), "srun names the killed task");
    // srun ends the step at a task's bad exit because of --kill-on-bad-exit (and says so). Without
    // it the step ends here too, a little later: Slurm's pmix plugin aborts it when Open MPI
    // reports the lost rank; a cluster's other plugin may not.
    assert!(text.contains("Terminating StepId="), "srun did not end the step itself (--kill-on-bad-exit)");
    drop(job);

    // The checkpoint is whole, and trained epochs are kept.
    let rt = Runtime::new(engine::RuntimeOptions::from_env().expect("the environment's settings"))
        .expect("a Vulkan device (lavapipe is enough)");
    let (model, sgd) = new_model(&rt);
    let state = load_training(&rt, &model, &sgd, &last).expect("the last checkpoint loads");
    assert!(state.epoch >= 1);
    drop((model, sgd, rt));

    // The same script again, to one epoch more than the checkpoint holds.
    let epochs = (state.epoch + 1).to_string();
    let (child, job) = submit(&scaled_script(&data, &out, &["--epochs", &epochs, "--adv", "none", "--eval-every", "30"]), &root, "resume");
    let (status, text) = finish(child, &job, Duration::from_secs(300));
    assert!(status.success(), "the resubmitted script failed ({status})");
    assert_eq!(count(&text, &format!("done: {epochs} epochs")), 1, "rank 0 reports the end of the resumed run");
    let config: serde_json::Value = read_json(out.join("config.json"));
    assert_eq!(config["ranks"], 2);
    assert_eq!(config["epochs"], state.epoch + 1);
    let history = config["history"].as_array().unwrap_or_else(|| panic!("the resume is recorded: {config}"));
    assert_eq!(history.len(), 1, "{config}");
    assert_eq!(history[0]["epoch"], state.epoch);
    assert_eq!(history[0]["changed"]["epochs"], serde_json::json!({"from": 30, "to": state.epoch + 1}));
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let epochs: Vec<u64> =
        metrics.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["epoch"].as_u64().unwrap()).collect();
    assert_eq!(epochs, (1..=state.epoch as u64 + 1).collect::<Vec<_>>(), "the epochs before the kill, then the resumed one");
}
