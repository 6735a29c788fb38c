"""Released tokenizers by name: a Hugging Face Hub id (`OpenMOSS-Team/MOSS-Audio-Tokenizer`,
optionally `...@REVISION`) resolved to a local snapshot folder, and a reference-layout folder
pushed to the Hub.

Only `config.json`, the safetensors files and their index are fetched (`ALLOW_PATTERNS`): the
released repositories also hold Python for `trust_remote_code`, which is never downloaded, let
alone run. The standard cache (`HF_HUB_CACHE` / `HF_HOME`, or `cache_dir`) and `HF_HUB_OFFLINE`
are honoured; every failure is one `CheckpointError` line (no network and not cached, unknown
repository or revision, gated repository, a repository without safetensors).
"""
from __future__ import annotations

import os
import re

from cat_jax.convert import INDEX, SAFETENSORS
from cat_jax.errors import CheckpointError

ALLOW_PATTERNS = ("config.json", "*.safetensors", INDEX)
RELEASED_V1 = "OpenMOSS-Team/MOSS-Audio-Tokenizer"
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$")


def split_id(name: str) -> tuple[str, str | None]:
  """'ORG/NAME@REV' -> ('ORG/NAME', 'REV'); without '@', the revision is None."""
  repo, sep, rev = name.partition("@")
  return repo, (rev or None) if sep else None


def is_repo_id(name: str | os.PathLike) -> bool:
  """Whether `name` reads as a Hub id (ORG/NAME, optionally @REVISION) rather than a path."""
  if not isinstance(name, str) or name.startswith((".", "/", "~")) or "\\" in name:
    return False
  repo, _ = split_id(name)
  return bool(_REPO_ID.match(repo)) and ".." not in repo and not repo.endswith((".", "-"))


def offline() -> bool:
  """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as it is now, not as it was when huggingface_hub was
  imported."""
  from huggingface_hub import constants
  env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
  if env is not None:
    return env.strip().upper() in {"1", "ON", "YES", "TRUE"}
  return bool(constants.HF_HUB_OFFLINE)


def cache_root(cache_dir: str | os.PathLike | None = None) -> str:
  """The Hub cache in force: `cache_dir`, else HF_HUB_CACHE, else HF_HOME/hub, else the default."""
  if cache_dir is not None:
    return os.fspath(cache_dir)
  if os.environ.get("HF_HUB_CACHE"):
    return os.environ["HF_HUB_CACHE"]
  if os.environ.get("HF_HOME"):
    return os.path.join(os.environ["HF_HOME"], "hub")
  from huggingface_hub import constants
  return constants.HF_HUB_CACHE


def _hub():
  try:
    import huggingface_hub
  except ImportError:  # a dependency of cat_jax; only a hand-made environment lacks it
    raise CheckpointError("loading by Hub id needs huggingface_hub (pip install huggingface_hub)") from None
  return huggingface_hub


def resolve(name: str, revision: str | None = None, cache_dir: str | os.PathLike | None = None,
            token: str | bool | None = None, local_files_only: bool | None = None) -> str:
  """The local snapshot folder of Hub id `name` (config.json + safetensors), downloaded if needed.

  revision: a branch, tag or commit (default: `@REV` in `name`, else main). local_files_only:
  default HF_HUB_OFFLINE; then only the cache is read.
  """
  hf = _hub()
  from huggingface_hub import errors
  repo, rev = split_id(name)
  if revision is not None and rev is not None and revision != rev:
    raise CheckpointError(f"{name}: two revisions given ({rev!r} in the id, {revision!r} as revision)")
  revision = revision or rev
  at = f"{repo}@{revision}" if revision else repo
  cache = cache_root(cache_dir)
  no_net = offline() if local_files_only is None else local_files_only
  try:
    folder = hf.snapshot_download(repo, revision=revision, cache_dir=cache, token=token,
                                  allow_patterns=list(ALLOW_PATTERNS), local_files_only=no_net)
  except errors.GatedRepoError:
    raise CheckpointError(f"{at} is a gated Hugging Face repository: accept its terms on the Hub, then "
                          "log in (`hf auth login` or HF_TOKEN)") from None
  except errors.RepositoryNotFoundError:
    raise CheckpointError(f"{at}: no local folder of that name and no such Hugging Face repository (or it is "
                          "private: log in with `hf auth login` or HF_TOKEN)") from None
  except errors.RevisionNotFoundError:
    raise CheckpointError(f"{at}: the Hugging Face repository {repo} has no revision {revision or 'main'!r}") from None
  except (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled, ConnectionError, OSError) as e:
    if isinstance(e, errors.HfHubHTTPError):
      raise CheckpointError(f"{at}: the Hugging Face Hub answered {type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}") from None
    why = "HF_HUB_OFFLINE is set" if no_net else "the Hugging Face Hub cannot be reached"
    raise CheckpointError(f"{at}: no local folder of that name, {why} and it is not in the Hub cache "
                          f"{cache} (download it once online, or pass a folder)") from None
  except errors.HFValidationError as e:
    raise CheckpointError(f"{at}: not a local folder nor a valid Hub id ({str(e).splitlines()[0]})") from None
  if not os.path.exists(os.path.join(folder, "config.json")):
    raise CheckpointError(f"{at} has no config.json: not a CAT / MOSS-Audio-Tokenizer repository")
  if not any(f.endswith(".safetensors") for f in os.listdir(folder)):
    raise CheckpointError(f"{at} holds no safetensors weights ({SAFETENSORS} or shards); cat_jax reads only "
                          "safetensors (never pickles or remote code)")
  return folder


def resolve_path(name_or_path: str | os.PathLike, revision: str | None = None,
                 cache_dir: str | os.PathLike | None = None, **kw) -> str:
  """A local folder as it is; a Hub id (not an existing path) through `resolve`."""
  path = os.fspath(name_or_path)
  if os.path.exists(path) or not is_repo_id(path):
    if revision is not None:
      raise CheckpointError(f"{path} is a local folder: revision applies to Hub ids only")
    return path
  return resolve(path, revision, cache_dir, **kw)


# ---- upload -------------------------------------------------------------------------------

def upload_plan(folder: str | os.PathLike) -> list[str]:
  """The files `push_to_hub` uploads from a reference-layout folder, sorted: config.json, the
  safetensors (and index) and README.md (the model card, if any). Nothing else in the folder goes up."""
  folder = os.fspath(folder)
  names = sorted(os.listdir(folder))
  files = [f for f in names if f in ("config.json", "README.md", INDEX) or
           (f.startswith("model") and f.endswith(".safetensors"))]
  if "config.json" not in files:
    raise CheckpointError(f"{folder} has no config.json: export it with `cat-jax export` first")
  if not any(f.endswith(".safetensors") for f in files):
    raise CheckpointError(f"{folder} holds no safetensors weights to upload")
  return files


def upload(repo_id: str, folder: str, files: list[str], private: bool = False,
           token: str | None = None, message: str = "Upload CAT tokenizer (cat_jax export)") -> str:
  """The network part of `push_to_hub`: create_repo (kept if it exists) + upload_folder of `files`.
  Returns the commit URL. Tests replace this function."""
  hf = _hub()
  try:
    api = hf.HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    info = api.upload_folder(repo_id=repo_id, folder_path=folder, allow_patterns=files,
                             commit_message=message, repo_type="model")
  except (OSError, ValueError) as e:  # HfHubHTTPError is an OSError; no token is a ValueError/OSError
    raise CheckpointError(f"push to {repo_id} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
  return str(getattr(info, "commit_url", info))


def check_repo_id(repo_id: str) -> str:
  """`repo_id` if it is ORG/NAME (no revision), else a CheckpointError."""
  if not is_repo_id(repo_id) or "@" in repo_id:
    raise CheckpointError(f"--push-to-hub wants ORG/NAME, got {repo_id!r}")
  return repo_id


def push_to_hub(folder: str | os.PathLike, repo_id: str, private: bool = False, token: str | None = None) -> str:
  """Uploads a reference-layout folder (`upload_plan`) to `repo_id` (ORG/NAME). Returns the URL."""
  check_repo_id(repo_id)
  folder = os.fspath(folder)
  return upload(repo_id, folder, upload_plan(folder), private=private, token=token)


# ---- the Hub model card of an exported run -----------------------------------------------

CARD_METADATA = """---
library_name: cat_jax
license: apache-2.0
pipeline_tag: audio-to-audio
tags:
- audio
- audio-tokenizer
- neural-codec
- jax
- moss-audio-tokenizer
---
"""


def run_summary(workdir: str, step: int | None = None) -> tuple[dict, dict[str, str]]:
  """({what the card says of training}, {eval folder: its results.md}) of a training WORKDIR: the
  saved run config (data sources, steps, batch) and the tables `cat-jax eval --out WORKDIR/eval_*`
  wrote there (codec rows and, evaluated with --baselines, the classic codecs' rows)."""
  from cat_jax.train import checkpoints
  cfg, s = checkpoints.read_run_config(workdir, step)
  get = lambda d, k: d.get(k) if hasattr(d, "get") else None
  data, sched = cfg.get("data") or {}, cfg.get("schedule") or {}
  training = {"training data": get(data, "source"), "evaluation data": get(data, "eval_source"),
              "step": s, "steps planned": cfg.get("num_steps"), "stage-1 steps": get(sched, "stage1_steps"),
              "batch size": cfg.get("batch_size"), "segment (s)": cfg.get("segment_seconds"),
              "compute dtype": cfg.get("compute_dtype"), "initialised from": cfg.get("init_from")}
  evals = {}
  for name in sorted(os.listdir(workdir)):
    table = os.path.join(workdir, name, "results.md")
    if name.startswith("eval") and os.path.isfile(table):
      with open(table) as f:
        evals[name] = f.read().strip()
  return {k: v for k, v in training.items() if v not in (None, "")}, evals


def hub_card(card: str, training: dict, evals: dict[str, str]) -> str:
  """The export's card with the Hub's metadata block in front, then training and evaluation."""
  lines = [CARD_METADATA + card.rstrip(), "", "## Training", ""]
  lines += [f"- {k}: {v}" for k, v in training.items()]
  lines += ["", "## Evaluation", ""]
  if not evals:
    lines.append("No evaluation tables in the run (`cat-jax eval --model DIR --out WORKDIR/eval_NAME "
                 "--baselines codec2,opus` writes them).")
  for name, table in evals.items():
    lines += [f"### {name}", "", table, ""]
  if evals:
    lines.append("Rows other than this model's are classic codecs at their nominal bit rates, on the same clips.")
  return "\n".join(lines).rstrip() + "\n"


def push_export(out: str, workdir: str, repo_id: str, step: int | None = None, private: bool = False,
                token: str | None = None) -> tuple[list[str], str]:
  """After `export_workdir(workdir, out, ...)`: turns out/README.md into the Hub card (metadata,
  training, evaluation tables) and uploads the reference layout. Returns (files, URL)."""
  check_repo_id(repo_id)
  readme = os.path.join(out, "README.md")
  with open(readme) as f:
    card = f.read()
  if not card.startswith("---\n"):
    with open(readme, "w") as f:
      f.write(hub_card(card, *run_summary(workdir, step)))
  files = upload_plan(out)
  return files, upload(repo_id, out, files, private=private, token=token)
