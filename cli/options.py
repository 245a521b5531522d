"""What several `na-deploy` commands share: the one-line error rule, option declarations, and option checks.

One declaration per option that more than one command takes (`--target`, `--backend`, `--device`, the
training options of `train` / `quantize`), one help text each; one check per rule (an output file that is a
directory, an output that exists without --force, --timesteps lists). Light: click and na_deploy.errors at
import, so `na-deploy --help` stays instant; heavier imports happen inside the functions.
"""
from __future__ import annotations

import functools
import os
import stat
from pathlib import Path
from typing import Iterable, Optional

import click

from na_deploy.errors import BackendFailure, NaDeployError
from na_deploy.runlock import check_not_in_locked_run


# ------------------------------------------------------------------------------------------- errors
class UserError(click.ClickException):
    """A bad request: printed as one line `error: <message>`, exit code 2."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class BackendFailed(UserError):
    """The backend failed while running (a dead Lava worker, a hung run, a crashed shard): one line
    `error: <message>`, exit code 3."""

    exit_code = 3


def as_click_error(e: NaDeployError) -> UserError:
    """A NaDeployError as the click error the CLI prints: BackendFailure -> exit 3, any other -> exit 2."""
    return BackendFailed(str(e)) if isinstance(e, BackendFailure) else UserError(str(e))


def one_line_errors(fn):
    """NaDeployError -> `error: <message>` and exit code 2, a BackendFailure exit code 3 (also when the command
    is invoked directly)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NaDeployError as e:
            raise as_click_error(e) from e
    return wrapper


# ------------------------------------------------------------------------------------------ checks
def parse_timesteps(value: str) -> list[int]:
    """`--timesteps 1,2,4` -> sorted unique positive ints (the rule of `na_deploy.checks`); NaDeployError otherwise."""
    from na_deploy.checks import check_timesteps  # numpy: imported when a command runs, not for --help

    try:
        return check_timesteps([int(v) for v in str(value).split(",") if v.strip()])
    except (ValueError, NaDeployError):
        pass
    raise NaDeployError(f"--timesteps {value!r}: expected comma-separated positive integers, e.g. 1,2,4,8")


def check_output_file(path: str, option: str = "--out",
                      allowed: str = "a file path such as runs/net.nad.h5") -> Path:
    """An output file option as a Path; refuses a directory before anything is computed (`allowed` says what
    the option takes, e.g. "a checkpoint file path (e.g. runs/model.pt)")."""
    p = Path(path)
    if p.is_dir():
        raise NaDeployError(f"{option} {path}: is a directory; allowed: {allowed}")
    return p


def check_replaceable(out: str, force: bool) -> None:
    """An output that exists is replaced only with --force."""
    if Path(out).exists() and not force:
        raise NaDeployError(f"--out {out}: exists; pass --force to replace it")


# ------------------------------------------------------------------- outputs vs inputs (issue 22)
STDOUT_NAMES = ("-", "/dev/stdout")


def is_stdout(path: Optional[str]) -> bool:
    """`-` or /dev/stdout as a JSON / report output: print it to standard output instead of writing a file."""
    return path is not None and str(path) in STDOUT_NAMES


def _file_id(path) -> Optional[tuple[int, int]]:
    """(st_dev, st_ino) of an existing file (links followed), None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def check_output_target(path, option: str) -> None:
    """An output path must be new or a regular file: never a directory, symbolic link, FIFO or device node (the
    atomic rename would replace the link or node itself, or a reader would block on it)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise NaDeployError(f"{option} {path}: cannot be written ({e.strerror or e})") from None
    kind = ("a directory" if stat.S_ISDIR(mode) else "a symbolic link" if stat.S_ISLNK(mode)
            else "a FIFO" if stat.S_ISFIFO(mode) else "a device node" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else None)
    if kind:
        raise NaDeployError(f"{option} {path}: is {kind}; allowed: a new or regular file path")


def check_writable_folder(path, option: str) -> None:
    """The folder an output goes to exists (or can be made under a writable folder) and is writable, checked
    before any expensive work."""
    folder = Path(os.path.abspath(path)).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise NaDeployError(f"{option} {path}: {folder} is not a folder; allowed: a path under a writable folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise NaDeployError(f"{option} {path}: folder {folder} is not writable")


def check_outputs(outputs: dict[str, Optional[str]], inputs: Iterable[Optional[str]] = (),
                  stdout_ok: Iterable[str] = ()) -> None:
    """Every output of one command before anything runs: never one of its inputs (same resolved path, or same
    st_dev/st_ino), never another of its outputs, never a directory / link / FIFO / device, in a writable
    folder; `-` or /dev/stdout only for the options in `stdout_ok` (JSON and text reports)."""
    known: dict = {}
    for p in inputs:
        if p is not None and not is_stdout(p):
            known[Path(os.path.abspath(p)).resolve()] = f"the input {p}"
            if _file_id(p):
                known[_file_id(p)] = f"the input {p}"
    for option, path in outputs.items():
        if path is None or path == "":
            continue
        if is_stdout(path):
            if option in stdout_ok:
                continue
            raise NaDeployError(f"{option} {path}: cannot go to standard output; give a file name")
        check_output_target(path, option)
        keys = [Path(os.path.abspath(path)).resolve()] + ([_file_id(path)] if _file_id(path) else [])
        for k in keys:
            if k in known:
                raise NaDeployError(f"{option} {path}: is {known[k]}; an output never replaces an input or "
                                    "another output; give another file name")
        for k in keys:
            known[k] = f"also {option}"
        check_writable_folder(path, option)
        check_not_in_locked_run(path, option)


def check_folder_output(out: str, inputs: Iterable[Optional[str]], option: str = "--out") -> None:
    """An output folder (export, pipeline) never holds one of the command's inputs: replacing it would delete
    them."""
    root = Path(os.path.abspath(out)).resolve()
    for p in inputs:
        if p is None or is_stdout(p):
            continue
        q = Path(os.path.abspath(p)).resolve()
        if q == root or root in q.parents:
            raise NaDeployError(f"{option} {out}: holds the input {p}; replacing it would delete the input; "
                                "choose another folder")
    if Path(out).exists() or Path(out).is_symlink():
        mode = os.lstat(out).st_mode
        if not stat.S_ISDIR(mode) and not stat.S_ISREG(mode):
            raise NaDeployError(f"{option} {out}: is not a folder; allowed: a new or empty folder")
    check_writable_folder(Path(out) / "x", option)
    check_not_in_locked_run(out, option)


def check_force_replaces_own(out: str, own_names: Iterable[str], what: str, option: str = "--out") -> None:
    """--force replaces only a folder this command made: one holding nothing but the names it writes (a folder
    with other files, e.g. a complete pipeline run, is refused, never deleted)."""
    p = Path(out)
    if not p.is_dir():
        return
    foreign = sorted(e.name for e in p.iterdir() if e.name not in set(own_names))
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise NaDeployError(f"{option} {out}: holds files {what} does not write ({', '.join(foreign[:3])}{more}); "
                            "--force replaces only a folder it made; choose another folder")


# ------------------------------------------------------------------ values that look like flags
def looks_like_flag(value) -> bool:
    """`--quiet`, `-h`: an option name given where a value belongs (`-` and negative numbers are values)."""
    return isinstance(value, str) and (value.startswith("--") or
                                       (len(value) >= 2 and value[0] == "-" and value[1].isalpha()))


def _flag_guard(callback):
    def check(ctx, param, value):
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if looks_like_flag(v):
                what = f"a {param.metavar}" if param.metavar else "a value"
                hint = "a file name" if param.metavar in (None, "FILE", "PNG") else "a value"
                raise UserError(f"option {param.opts[-1]} expects {what}, got {v!r} (an option); give {hint}")
        return callback(ctx, param, value) if callback else value
    check.na_flag_guard = True
    return check


def refuse_flag_values(cmd: click.Command) -> click.Command:
    """Every option of `cmd` that takes a value refuses one that looks like a flag: `verify NET --json --quiet`
    is an error, not a file named `--quiet`. Applied to every command by the group (cli/main.py)."""
    for p in cmd.params:
        if isinstance(p, click.Option) and not p.is_flag and not p.count \
                and not getattr(p.callback, "na_flag_guard", False):
            p.callback = _flag_guard(p.callback)
    return cmd


# ------------------------------------------------------------------------------ target and backend
TARGET_HELP = "Hardware target (its limits, fixed point and reference simulator)."
BACKEND_HELP = "Backend of the target that runs / exports the net [default: the target's, lava for loihi2]."

target_option = click.option("--target", "target_name", default="loihi2", show_default=True, help=TARGET_HELP)
backend_option = click.option("--backend", "backend_name", default=None, help=BACKEND_HELP)


def target_and_backend(target_name: str, backend_name: Optional[str], net=None):
    """(target, backend) for `--target` / `--backend` (default: the target's default backend for `net`). The
    backend is made only when a command runs (Lava sets the multiprocessing start method at import)."""
    from na_deploy.hw_targets import get_backend, get_target

    target = get_target(target_name)
    return target, get_backend(backend_name, target, net)


# ----------------------------------------------------------------------------------- torch device
DEVICE_HELP = "torch device: auto (CUDA when available, else CPU), cpu, cuda, cuda:N."

device_option = click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)


# ------------------------------------------------------------------------- training (train, quantize)
DATA_HELP = ("Data set: an .npz with arrays x_train, y_train, x_test, y_test (uint8 0-255 or float in [0,1]; "
             "N x H x W or N x C x H x W; integer labels in [0, K)), or an image folder DIR/train/<class>/*.png|jpg, "
             "DIR/val/<class>/... (one image size; streamed). Default: scikit-learn's embedded 8x8 "
             "digits, stratified 1437/360 split by --seed. Inputs are scaled per channel, x/255/std "
             "(no mean subtraction, so the scale folds into the first layer).")
MODEL_HELP = ("Network: a registry name (digits_cnn, tiny_resnet, resnet18, resnet20, resnet34, resnet50), "
              "torchvision:NAME (any torchvision classification builder, weights=None, the data's classes), "
              "package.module:builder or path/to/file.py:builder (a callable returning an nn.Module; it gets "
              "num_classes, in_channels, input_size if it takes them). The checkpoint records the spec and the "
              "builder file's SHA-256.")
WEIGHTS_HELP = ("Full-precision state_dict to start from (torch.save(model.state_dict()), torchvision .pth, or "
                ".safetensors with the safetensors package), loaded strictly: missing, unexpected or mis-shaped "
                "keys are refused. Its name and SHA-256 go into the checkpoint.")
RESET_HEAD_HELP = ("With --weights: re-initialise the final classifier when its class count differs from the "
                   "data's (every other weight still loads strictly).")


def weights_options(fn):
    """--weights FILE and --reset-head (train, quantize)."""
    fn = click.option("--reset-head", "reset_head", is_flag=True, help=RESET_HEAD_HELP)(fn)
    return click.option("--weights", "weights", default=None, metavar="FILE", help=WEIGHTS_HELP)(fn)


def check_weights_use(weights, reset_head: bool, resume, from_ckpt=None) -> None:
    """--reset-head needs --weights; --weights does not combine with --resume / --from (they hold weights)."""
    if reset_head and weights is None:
        raise NaDeployError("--reset-head: needs --weights FILE (it re-initialises that file's classifier)")
    for flag, value in (("--resume", resume), ("--from", from_ckpt)):
        if weights is not None and value is not None:
            raise NaDeployError(f"--weights {weights}: cannot be combined with {flag} (its checkpoint holds the "
                                "weights)")
NUM_CLASSES_HELP = ("K, the number of classes (outputs) of the network. Default: 1 + the largest y_train label, "
                    "and then every class 0..K-1 must occur in y_train. Given, labels must be in [0, K) and "
                    "classes without training examples are allowed (with a warning). With --from / --resume: "
                    "the checkpoint's.")
RESUME_HELP = ("Continue an interrupted run from the checkpoint it left (its --out, rewritten after every epoch): "
               "weights, optimizer, schedule and RNG state, up to the epochs it planned; on CPU the result equals "
               "the uninterrupted run. Model, data, seed and hyperparameters come from the checkpoint (a "
               "differing option is an error). Writes to --out if given, else back to CKPT.")


def _data_option(ctx, param, value):
    """--augment / --workers: kept in ctx.meta for `load_dataset` below (no extra command parameters)."""
    ctx.meta[f"na_deploy.{param.name}"] = value
    return value


def load_dataset(*args, **kwargs):
    """na_deploy.data.arrays.load_dataset with the running command's --augment and --workers."""
    from na_deploy.data.arrays import load_dataset as load

    meta = click.get_current_context().meta
    return load(*args, augment=meta.get("na_deploy.augment"), workers=meta.get("na_deploy.workers", 0), **kwargs)


def training_options(fn):
    """The options `train` and `quantize` share: data, seed, batch, device, resume, augmentation, workers."""
    opts = [
        click.option("--data", default=None, metavar="NPZ|DIR", help=DATA_HELP),
        click.option("--seed", default=None, type=int,
                     help="Seed for weight init, shuffling, the digits split and the noise adaptor's eps "
                          "[default: 0; quantize --from: the checkpoint's seed]."),
        click.option("--batch-size", default=64, show_default=True, type=int, help="Mini-batch size."),
        device_option,
        click.option("--quiet", is_flag=True, help="No progress bar."),
        click.option("--num-classes", default=None, type=int, metavar="K", help=NUM_CLASSES_HELP),
        click.option("--resume", default=None, metavar="CKPT", help=RESUME_HELP),
        click.option("--augment", default=None, metavar="[none|cifar|imagenet]", expose_value=False,
                     callback=_data_option, help="Training augmentation (default none): cifar = pad 4 + random crop "
                     "+ flip; imagenet = RandomResizedCrop 224 + flip, evaluation resize 256 + centre crop 224 "
                     "(image folders only). Stored in the checkpoint: --resume continues with it."),
        click.option("--workers", default=0, show_default=True, type=int, expose_value=False, callback=_data_option,
                     help="DataLoader worker processes for image folders / augmented data (0: the main process)."),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn
