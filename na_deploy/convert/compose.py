"""Exact compositions for networks from outside the registry (issue 19; docs/contract.md C2): linear ops with no
activation between them merged into one synapse where that is exact, padded average pools, adaptive pools of
any size and channel concatenation. The older rules (`affine`) are tried first, so registry models convert to
the same bytes as before.

Rules (each exact; the float64 self-check confirms every conversion):
* Padded average pool (count_include_pad=True) on an activation = a depthwise Conv2d (weight 1/k^2, groups C,
  the pool's stride and zero padding): the divisor is always k^2.
* op2 after op1 with no activation between (op1: conv / pool as a conv (W1, S1, P1); op2: conv or pool (W2,
  S2, P2)) = one conv (W, S1*S2, P1) with W[o, i, a*S1 + y, b*S1 + x] = sum_m W2[o, m, a, b] W1[m, i, y, x],
  exact when op2 reads no zero padding of the intermediate map (P2 = 0), or when op1 is pointwise (1x1,
  stride 1, no padding: it commutes with zero padding). Otherwise op2 reads zeros where op1 would have
  produced W1*pad(x) != 0 at the border: refused here, and the fx walk materialises op1's map as a graded
  node (`fx_nodes`) that op2 then reads like an activation.
* AdaptiveAvgPool2d whose windows are uneven (or that upsamples, e.g. 1x1 -> 7x7): the same per-channel
  matrix A (OH*OW x H*W, window means) on every channel, a "chanmap" term consumed by Flatten + Linear
  (the Linear's weight is multiplied by A channel by channel: sizes stay those of the Linear).
* torch.cat(parts, dim=1): every part's terms become convs writing their own channel rows of the whole map
  (zeros elsewhere); a later conv on the concatenation is the sum of convs on the parts.
* A channel split or permutation (chunk / split / narrow / a channel slice, ShuffleNet's channel shuffle;
  recognised on an index tensor by `fx_shapes`): out[j] = x[sel[j]] is a 1x1 conv with a 0/1 weight, composed
  into every term (exact: it reads no padding); terms left with no selected channel are dropped.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from na_deploy.convert.affine import (Refusal, Shape, _as_full_conv, _dense_of, _Lin, _merge_terms, _pair, _Term,
                                      apply_conv, apply_pool, bn_affine, conv_padding)
from na_deploy.errors import NaDeployError
from na_deploy.ir import Conv2d

_RELAY = "the walk carries the map through a graded node instead (contract C2, graded nodes)"


def pool_weight(channels: int, k: tuple[int, int]) -> np.ndarray:
    """The (C, C, kh, kw) full-conv weight of an average pool (1/k^2 on the channel diagonal)."""
    w = np.zeros((channels, channels) + tuple(k))
    w[np.arange(channels), np.arange(channels)] = 1.0 / (k[0] * k[1])
    return w


def padded_pool_term(t: _Term, out: Shape, k: tuple[int, int], s: tuple[int, int], p: tuple[int, int]) -> _Term:
    """An average pool with zero padding counted (count_include_pad=True) on an activation: a depthwise conv."""
    c = t.src_shape[0]
    w = np.full((c, 1) + tuple(k), 1.0 / (k[0] * k[1]))
    return _Term("conv", t.src_shape, out, w, s, p, c)


def _pointwise(t: _Term) -> bool:
    w = _as_full_conv(t)
    return w is not None and w[0].shape[2:] == (1, 1) and tuple(w[1]) == (1, 1) and tuple(w[2]) == (0, 0)


def compose_conv(t: _Term, out: Shape, w2: np.ndarray, s2: tuple[int, int], p2: tuple[int, int],
                 what: str) -> _Term:
    """The one conv term computing op2(t(x)) (op2: full-channel weight w2, stride s2, padding p2); Refusal
    naming `what` (both ops) when no single conv is exact (see the module rules)."""
    if t.op in ("dense", "chanmap") or t.flat:
        raise Refusal(f"after a {t.op} op ({what}): no exact single synapse")
    w1, s1, p1 = _as_full_conv(t)
    if tuple(p2) != (0, 0) and not _pointwise(t):
        raise Refusal(f"reads the zero padding of the output of a {t.op} op with no activation in between "
                      f"({what}); padding that map is not padding the input, so no exact single synapse: {_RELAY}")
    if tuple(p2) != (0, 0):  # op1 is pointwise: W = W2 . W1 channel-wise, op2's stride and padding
        w = np.einsum("omab,mi->oiab", w2, w1[:, :, 0, 0])
        stride, pad = tuple(s2), tuple(p2)
    else:
        kh = w1.shape[2] + (w2.shape[2] - 1) * s1[0]
        kw = w1.shape[3] + (w2.shape[3] - 1) * s1[1]
        w = np.zeros((w2.shape[0], w1.shape[1], kh, kw))
        for a in range(w2.shape[2]):
            for b in range(w2.shape[3]):
                w[:, :, a * s1[0]:a * s1[0] + w1.shape[2], b * s1[1]:b * s1[1] + w1.shape[3]] += np.einsum(
                    "om,miyx->oiyx", w2[:, :, a, b], w1)
        stride, pad = (s1[0] * s2[0], s1[1] * s2[1]), tuple(p1)
    try:
        ok = tuple(Conv2d(w, stride, pad).out_shape(t.src_shape)) == tuple(out)
    except NaDeployError:
        ok = False
    if not ok:
        raise Refusal(f"composed with the {t.op} op before it ({what}) does not give the {out} map; {_RELAY}")
    return _Term("conv", t.src_shape, out, w, stride, pad, 1)


def full_weight(w: np.ndarray, groups: int) -> np.ndarray:
    """A grouped conv weight (Cout, Cin/g, kh, kw) as a dense-channel one (Cout, Cin, kh, kw)."""
    if groups == 1:
        return w
    cout, cin_g = w.shape[:2]
    cout_g = cout // groups
    full = np.zeros((cout, cin_g * groups) + w.shape[2:])
    for g in range(groups):
        full[g * cout_g:(g + 1) * cout_g, g * cin_g:(g + 1) * cin_g] = w[g * cout_g:(g + 1) * cout_g]
    return full


def bias_through(bias: Optional[np.ndarray], w2: np.ndarray, s2, p2, out: Shape) -> Optional[np.ndarray]:
    """op2 applied to a bias map (zero padding included: a border that differs is caught by `_bias_vector`)."""
    if bias is None:
        return None
    b = torch.as_tensor(np.asarray(bias, dtype=np.float64)[None])
    y = F.conv2d(b, torch.as_tensor(w2), stride=tuple(s2), padding=tuple(p2))[0].numpy()
    if tuple(y.shape) != tuple(out):
        raise Refusal(f"maps a bias of shape {tuple(bias.shape)} to {tuple(y.shape)}, not {out}")
    return y


def compose_lin(lin: _Lin, out: Shape, w2: np.ndarray, s2, p2, what: str) -> _Lin:
    """op2 (full weight w2) on every term of a map that is not a residual sum (a concatenation may have many)."""
    terms = {src: compose_conv(t, out, w2, s2, p2, what) for src, t in lin.terms.items()}
    return _Lin(terms, out, bias_through(lin.bias, w2, s2, p2, out), False, lin.last)


# ------------------------------------------------------------------------------ adaptive average pool
def adaptive_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(out, in) window means of adaptive_avg_pool1d: window i = [floor(i*in/out), ceil((i+1)*in/out))."""
    m = np.zeros((size_out, size_in))
    for i in range(size_out):
        lo, hi = (i * size_in) // size_out, -((-(i + 1) * size_in) // size_out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def adaptive_chanmap(lin: _Lin, out: Shape) -> _Lin:
    """AdaptiveAvgPool2d to `out` as a per-channel matrix term (consumed by Flatten + Linear)."""
    if len(lin.terms) != 1 or lin.is_sum or len(lin.shape) != 3:
        raise Refusal(f"with uneven windows ({lin.shape} -> {out}) on a sum or concatenation; allowed: on an "
                      "activation or a non-overlapping pool of one")
    src, t = next(iter(lin.terms.items()))
    a = np.kron(adaptive_matrix(lin.shape[1], out[1]), adaptive_matrix(lin.shape[2], out[2]))
    if t.op == "pool" and t.kernel == t.stride and not t.flat:
        a = a @ np.kron(adaptive_matrix(t.src_shape[1], lin.shape[1]), adaptive_matrix(t.src_shape[2], lin.shape[2]))
    elif t.op != "identity" or t.flat:
        raise Refusal(f"with uneven windows ({lin.shape} -> {out}) after a {t.op} op; allowed: on an activation")
    bias = None if lin.bias is None else np.einsum("cq,pq->cp", lin.bias.reshape(lin.shape[0], -1), a).reshape(out)
    return _Lin({src: _Term("chanmap", t.src_shape, out, a)}, out, bias, False, lin.last)




# ----------------------------------------------------------------------------- channel split / shuffle
def channel_select(lin: _Lin, sel: np.ndarray, what: str) -> _Lin:
    """out[j] = lin[sel[j]] (a channel split, a permutation, or both) as an exact affine map."""
    sel = np.asarray(sel, dtype=np.int64)
    if len(lin.shape) != 3:
        raise Refusal(f"selects channels of a {lin.shape} tensor; allowed: (C, H, W) maps")
    if np.array_equal(sel, np.arange(lin.shape[0])):
        return lin
    out = (len(sel),) + tuple(lin.shape[1:])
    w2 = np.zeros((len(sel), lin.shape[0], 1, 1))
    w2[np.arange(len(sel)), sel, 0, 0] = 1.0
    terms = {}
    for src, t in lin.terms.items():
        nt = compose_conv(t, out, w2, (1, 1), (0, 0), what)
        if np.any(nt.weight):
            terms[src] = nt
    if not terms:
        raise Refusal(f"selects channels {sel.tolist()[:8]}... that no source feeds ({what})")
    bias = None if lin.bias is None else np.asarray(lin.bias, dtype=np.float64)[sel].copy()
    return _Lin(terms, out, bias, lin.is_sum and len(terms) > 1, lin.last)


# ------------------------------------------------------------------------------------- concatenation
def embed_rows(t: _Term, total: int, offset: int, out: Shape) -> _Term:
    """Term `t` writing channels offset .. offset + C_t of a `total`-channel map (zeros elsewhere)."""
    full = _as_full_conv(t) if t.op != "dense" and not t.flat else None
    if full is None:
        raise Refusal(f"concatenates a {t.op} map; allowed: (C, H, W) maps of activations, convs or pools")
    w1, s1, p1 = full
    w = np.zeros((total,) + w1.shape[1:])
    w[offset:offset + w1.shape[0]] = w1
    return _Term("conv", t.src_shape, out, w, tuple(s1), tuple(p1), 1)


def concat(parts: list[_Lin], out: Shape) -> _Lin:
    """torch.cat(parts, 1): one term per source (parts from one source merged exactly), biases stacked."""
    terms: dict[str, _Term] = {}
    biases, offset = [], 0
    for part in parts:
        if part.is_sum:
            raise Refusal("concatenates a residual sum; allowed: activations, convs or pools of them")
        for src, t in part.terms.items():
            nt = embed_rows(t, out[0], offset, out)
            merged = nt if src not in terms else _merge_terms(terms[src], nt)
            if merged is None:
                raise Refusal(f"concatenates two maps of source {src} that no single synapse computes exactly")
            terms[src] = merged
        biases.append(np.zeros(part.shape) if part.bias is None else np.asarray(part.bias, dtype=np.float64))
        offset += part.shape[0]
    bias = np.concatenate(biases, axis=0) if any(p.bias is not None for p in parts) else None
    return _Lin(terms, out, bias, False, parts[-1].last)


def batchnorm_terms(lin: _Lin, a: np.ndarray, c: np.ndarray) -> _Lin:
    """Eval BN (y = a x + c per channel) on a concatenation or an activation: every term as a conv, rows
    scaled by a; bias map a * bias + c."""
    if len(lin.shape) != 3:
        raise Refusal(f"on a tensor of shape {lin.shape}; allowed: (C, H, W) maps")
    terms = {}
    for src, t in lin.terms.items():
        if t.op in ("dense", "chanmap") or t.flat:
            raise Refusal(f"after a {t.op} op; allowed: BN after a conv, an activation or a concatenation")
        w, s, p = _as_full_conv(t)
        terms[src] = replace(_Term("conv", t.src_shape, t.shape, w, tuple(s), tuple(p), 1),
                             weight=w * a[:, None, None, None])
    base = lin.bias if lin.bias is not None else np.zeros(lin.shape)
    bmap = base * a[:, None, None] + c[:, None, None]
    return _Lin(terms, lin.shape, bmap, False, lin.last)


def numel(shape: Shape) -> int:
    return math.prod(shape)


# ------------------------------------------------------------------- the walker's ops, old rules first
def _plain(lin: _Lin) -> bool:
    """A map the older rules (`affine`) handle: a residual sum, or one identity / non-overlapping pool term."""
    if lin.is_sum:
        return True
    if len(lin.terms) != 1:
        return False
    t = next(iter(lin.terms.values()))
    return t.op == "identity" or (t.op == "pool" and t.kernel == t.stride)


def conv_any(lin: _Lin, out: Shape, path: str, weight, bias, stride, padding, dilation, groups,
             padding_mode: str = "zeros") -> _Lin:
    """conv2d of any map: `affine.apply_conv` for the older cases, else the exact composition (or Refusal)."""
    if _plain(lin):
        return apply_conv(lin, out, path, weight, bias, stride, padding, dilation, groups, padding_mode)
    w = weight.detach().double().cpu().numpy()
    if _pair(dilation) != (1, 1) or padding_mode != "zeros" or len(lin.shape) != 3:
        raise Refusal(f"with dilation {dilation} / padding_mode {padding_mode!r} on {lin.shape}; allowed: "
                      "dilation 1, zeros, (C, H, W) maps")
    pad = _pair(conv_padding(padding, stride, *w.shape[2:]))
    what = f"'{path}' after '{lin.last or 'the previous op'}'"
    res = compose_lin(lin, out, full_weight(w, int(groups)), _pair(stride), pad, what)
    if bias is not None:
        b = np.broadcast_to(bias.detach().double().cpu().numpy()[:, None, None], out)
        res.bias = b.copy() if res.bias is None else res.bias + b
    res.last = path
    return res


def pool_any(lin: _Lin, out: Shape, kernel, stride, padding, count_include_pad: bool, path: str) -> _Lin:
    """An average pool of any map (padding counted in the divisor); Refusal for count_include_pad=False."""
    k = _pair(kernel)
    s = _pair(stride if stride is not None and stride != [] else kernel)
    p = _pair(padding)
    maps = len(lin.shape) == len(out) == 3
    floor = tuple((lin.shape[i + 1] + 2 * p[i] - k[i]) // s[i] + 1 for i in range(2)) if maps else None
    if maps and tuple(out[1:]) != floor:  # ceil_mode partial windows, divided by kh*kw
        return ceil_pool(lin, out, k, s, p, path)
    if p != (0, 0) and not count_include_pad:
        raise Refusal(f"with padding {padding} and count_include_pad=False: the divisor depends on the position "
                      "(no exact synapse); allowed: count_include_pad=True (the paper's max-pool replacement)")
    if p == (0, 0) and _plain(lin) and (next(iter(lin.terms.values())).op == "identity" or k == s):
        return apply_pool(lin, out, kernel, stride)
    if lin.is_sum or len(lin.shape) != 3:
        raise Refusal(f"on a residual sum or a {lin.shape} tensor; allowed: pools of (C, H, W) maps")
    if len(lin.terms) == 1 and next(iter(lin.terms.values())).op == "identity":
        src, t = next(iter(lin.terms.items()))
        return _Lin({src: padded_pool_term(t, out, k, s, p)}, out, None, False, path)
    res = compose_lin(lin, out, pool_weight(lin.shape[0], k), s, p, f"'{path}' after '{lin.last or 'the previous op'}'")
    res.last = path
    return res


def ceil_pool(lin: _Lin, out: Shape, k, s, p, path: str) -> _Lin:
    """A ceil_mode average pool whose partial windows are divided by kh*kw (`quantize_model`'s ceil-mode max-pool):
    the last window overhangs the padded map by e, i.e. zero padding e more on the bottom / right only, which is
    a conv with symmetric padding p + e and kernel k + e whose first e taps are zero."""
    e = tuple((out[i + 1] - 1) * s[i] + k[i] - (lin.shape[i + 1] + 2 * p[i]) for i in range(2))
    c = lin.shape[0]
    w = np.zeros((c, 1, k[0] + e[0], k[1] + e[1]))
    w[:, :, e[0]:, e[1]:] = 1.0 / (k[0] * k[1])
    pad = (p[0] + e[0], p[1] + e[1])
    if lin.bias is None and not lin.is_sum and len(lin.terms) == 1 and next(iter(lin.terms.values())).op == "identity":
        src, t = next(iter(lin.terms.items()))
        return _Lin({src: _Term("conv", t.src_shape, out, w, s, pad, c)}, out, None, False, path)
    if lin.is_sum:
        raise Refusal("(ceil_mode) on a residual sum; allowed: pools of (C, H, W) maps")
    res = compose_lin(lin, out, full_weight(w, c), s, pad, f"'{path}' after '{lin.last or 'the previous op'}'")
    res.last = path
    return res


def batchnorm_any(lin: _Lin, bn) -> Optional[_Lin]:
    """BN on a concatenation or an activation (terms as convs); None: the older rule applies."""
    if lin.is_sum or (len(lin.terms) == 1 and next(iter(lin.terms.values())).op in ("conv", "dense")):
        return None
    a, c = bn_affine(bn)
    return batchnorm_terms(lin, a, c)


def linear_any(lin: _Lin, path: str, weight, bias) -> Optional[_Lin]:
    """A Linear on a flattened concatenation (the sum over its terms); None: the older rule applies."""
    if lin.is_sum or len(lin.terms) == 1 or len(lin.shape) != 1:
        return None
    w = weight.detach().double().cpu().numpy()
    out = (w.shape[0],)
    terms = {src: _Term("dense", t.src_shape, out, _dense_of(t, w)) for src, t in lin.terms.items()}
    b = np.zeros(out) if bias is None else bias.detach().double().cpu().numpy().copy()
    if lin.bias is not None:
        b = b + w @ lin.bias.reshape(-1)
    return _Lin(terms, out, b, False, path)
