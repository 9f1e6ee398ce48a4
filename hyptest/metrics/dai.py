"""Dai et al.'s ICL-vs-fine-tuning metrics: Rec2FTP, SimAOU, SimAM, attention Kendall tau.

Pure numpy functions.  Inputs follow the shapes of the reference code
(microsoft/LMOps ``understand_icl/icl_ft/compute_sim.py`` and
``compute_training_example_attn.py``): ``(n_examples, n_layers, hidden)`` for
attention outputs at the last position, ``(n_examples, n_layers, n_heads,
n_positions)`` for attention maps.  The reduced axis is always the last one;
any leading axes are kept, so the functions also work on one example or on
extra batch axes.  Like the reference code, they return per-example values;
averaging (over examples, then layers) and uncertainty belong to
``hyptest.metrics.summaries``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .._validation import validate_choice, validate_flag, validate_real_array, validate_rng

__all__ = [
    "Rec2FTPResult",
    "SimAMResult",
    "kendall_attention",
    "kendall_random_baseline",
    "rec2ftp",
    "simam",
    "simaou",
    "simaou_random_baseline",
]

_DISTRIBUTIONS: tuple[str, ...] = ("normal", "uniform")
#: Target number of float64 elements of one pairwise-sign block (8 MiB).
_BLOCK_ELEMENTS: int = 2**20


# ---------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------


def _validate_real(x: ArrayLike, name: str, *, min_ndim: int, min_last: int = 1) -> np.ndarray:
    arr = validate_real_array(x, name, min_ndim=min_ndim, finite=False)
    if arr.shape[-1] < min_last:
        raise ValueError(
            f"`{name}` must have at least {min_last} entries on its last axis, got shape {arr.shape}"
        )
    return validate_real_array(arr, name, finite_hint="pad ragged positions with 0, not NaN")


def _validate_same_shape(arrays: dict[str, np.ndarray]) -> None:
    shapes = {name: a.shape for name, a in arrays.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"`{n}` {s}" for n, s in shapes.items())
        raise ValueError(f"the arrays must have the same shape, got {listed}")


def _validate_flags(x: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind == "b":
        pass
    elif arr.dtype.kind in "iu":
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(f"`{name}` must hold booleans or 0/1, got other integers")
    else:
        raise TypeError(f"`{name}` must hold booleans (or 0/1 integers), got dtype {arr.dtype}")
    if arr.ndim < 1 or arr.shape[-1] < 1:
        raise ValueError(f"`{name}` must have a non-empty example axis (last axis), got shape {arr.shape}")
    return arr.astype(bool)


# ---------------------------------------------------------------------------
# numeric helpers
# ---------------------------------------------------------------------------


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine along the last axis; NaN where either vector is zero."""
    dot = (a * b).sum(axis=-1)
    denom = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    ok = denom > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(ok, dot / np.where(ok, denom, 1.0), np.nan)
    return np.clip(out, -1.0, 1.0)


def _unit(x: np.ndarray) -> np.ndarray:
    """Scale to unit length along the last axis; zero vectors stay zero."""
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def _kendall_tau_b(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b along the last axis of equal-shape arrays, by pairwise signs."""
    shape = x.shape[:-1]
    n = x.shape[-1]
    xr = x.reshape(-1, n)
    yr = y.reshape(-1, n)
    rows = xr.shape[0]
    num = np.zeros(rows)
    tx = np.zeros(rows)
    ty = np.zeros(rows)
    row_block = max(1, _BLOCK_ELEMENTS // (n * n))
    for r0 in range(0, rows, row_block):
        xs = xr[r0 : r0 + row_block]
        ys = yr[r0 : r0 + row_block]
        i_block = max(1, _BLOCK_ELEMENTS // (xs.shape[0] * n))
        for i0 in range(0, n - 1, i_block):
            i1 = min(n - 1, i0 + i_block)
            upper = np.arange(n)[None, :] > np.arange(i0, i1)[:, None]  # pairs i < j only
            sx = np.sign(xs[:, None, :] - xs[:, i0:i1, None]) * upper
            sy = np.sign(ys[:, None, :] - ys[:, i0:i1, None]) * upper
            num[r0 : r0 + row_block] += (sx * sy).sum(axis=(1, 2))
            tx[r0 : r0 + row_block] += (sx * sx).sum(axis=(1, 2))
            ty[r0 : r0 + row_block] += (sy * sy).sum(axis=(1, 2))
    denom = np.sqrt(tx * ty)
    ok = denom > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = np.where(ok, num / np.where(ok, denom, 1.0), np.nan)
    return np.clip(tau, -1.0, 1.0).reshape(shape)


# ---------------------------------------------------------------------------
# Rec2FTP
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rec2FTPResult:
    """Recall of fine-tuning's fixes by ICL (Dai et al.'s Rec2FTP).

    Attributes
    ----------
    value : float or numpy.ndarray
        ``numerator / denominator`` as a proportion in ``[0, 1]`` (Dai et
        al. print it multiplied by 100); NaN where ``denominator == 0``.
    numerator : int or numpy.ndarray
        Number of examples with ZS wrong, FT right and ICL right.
    denominator : int or numpy.ndarray
        Number of examples with ZS wrong and FT right.
    """

    value: float | np.ndarray
    numerator: int | np.ndarray
    denominator: int | np.ndarray


def rec2ftp(zs_correct: ArrayLike, ft_correct: ArrayLike, icl_correct: ArrayLike) -> Rec2FTPResult:
    """Share of the examples fine-tuning fixes that ICL also gets right (Rec2FTP).

    Parameters
    ----------
    zs_correct, ft_correct, icl_correct : array_like of bool, shape (..., n_examples)
        Whether the zero-shot, fine-tuned and in-context predictions of each
        example are correct (the ``correct`` column), aligned by example.
        Booleans or 0/1 integers; the last axis is reduced.

    Returns
    -------
    Rec2FTPResult
        ``value``, ``numerator``, ``denominator`` (scalars for 1-D input).

    Raises
    ------
    ValueError
        If the shapes differ, the example axis is empty, or integers other
        than 0/1 are given.
    TypeError
        If an input is not boolean or integer.

    Notes
    -----
    .. math::
        \\mathrm{Rec2FTP} = \\frac{|\\{i : \\neg Z_i \\wedge F_i \\wedge I_i\\}|}
        {|\\{i : \\neg Z_i \\wedge F_i\\}|}

    with :math:`Z, F, I` the correctness of ZS, FT and ICL.  When
    fine-tuning fixes no zero-shot error (denominator 0) there is nothing to
    recall and the ratio is undefined: ``value`` is NaN (never 0 or 1), and
    the zero denominator is returned so the caller can report it.  Dai et
    al.'s code divides by zero there.  The numerator and denominator are
    returned so that pooled (ratio-of-sums) estimates across tasks can be
    formed.

    References
    ----------
    .. [1] Dai, D., Sun, Y., Dong, L., Hao, Y., Ma, S., Sui, Z. and Wei, F.
       (2023). Why Can GPT Learn In-Context? Language Models Secretly Perform
       Gradient Descent as Meta-Optimizers. Findings of ACL 2023.

    Examples
    --------
    >>> from hyptest.metrics.dai import rec2ftp
    >>> res = rec2ftp([0, 0, 0, 1], [1, 1, 0, 1], [1, 0, 1, 1])
    >>> float(res.value), int(res.numerator), int(res.denominator)
    (0.5, 1, 2)
    """
    z = _validate_flags(zs_correct, "zs_correct")
    f = _validate_flags(ft_correct, "ft_correct")
    i = _validate_flags(icl_correct, "icl_correct")
    _validate_same_shape({"zs_correct": z, "ft_correct": f, "icl_correct": i})
    fixed = ~z & f
    den = fixed.sum(axis=-1)
    num = (fixed & i).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
    if den.ndim == 0:
        return Rec2FTPResult(value=float(value), numerator=int(num), denominator=int(den))
    return Rec2FTPResult(value=value, numerator=num, denominator=den)


# ---------------------------------------------------------------------------
# SimAOU
# ---------------------------------------------------------------------------


def simaou(
    icl: ArrayLike, ft: ArrayLike, zs: ArrayLike, *, normalise: bool = True
) -> np.ndarray:
    """Similarity of attention-output updates, ICL vs fine-tuning (SimAOU), per layer.

    Parameters
    ----------
    icl, ft, zs : array_like, shape (n_examples, n_layers, hidden)
        Attention outputs at the last (scored) position of each layer under
        ICL, after fine-tuning (evaluated zero-shot), and zero-shot; any
        leading shape works, the last axis is the hidden one.
    normalise : bool, default True
        Scale each of ICL, FT and ZS to unit length along the hidden axis
        before taking differences, as Dai et al.'s code does (see Notes).

    Returns
    -------
    numpy.ndarray, shape (n_examples, n_layers)
        Cosine of ``ICL - ZS`` and ``FT - ZS`` in ``[-1, 1]``; NaN where an
        update is exactly zero.

    Raises
    ------
    ValueError
        If shapes differ or values are non-finite.

    See Also
    --------
    simaou_random_baseline : the same against a random update direction.

    Notes
    -----
    With :math:`\\hat x = x / \\|x\\|_2` when `normalise` (else
    :math:`\\hat x = x`),

    .. math::
        \\mathrm{SimAOU} = \\cos\\big(\\hat h_{\\mathrm{ICL}} - \\hat h_{\\mathrm{ZS}},\\
        \\hat h_{\\mathrm{FT}} - \\hat h_{\\mathrm{ZS}}\\big).

    The unit-length normalisation is not in the paper's text but is in the
    reference code (``analyze_sim(..., normalize=True)`` in
    ``understand_icl/icl_ft/compute_sim.py``); it makes the update a change of
    *direction* only and removes the effect of a change of norm.  The paper
    reports the mean over examples per layer, then over layers.  Where an
    update is exactly zero the cosine is undefined and NaN is returned; the
    reference code adds 1e-20 to the denominator and so returns 0 there.
    Invariant to swapping ICL and FT and to positive rescaling of the inputs
    (all three jointly; each one separately when `normalise`).

    References
    ----------
    .. [1] Dai, D., Sun, Y., Dong, L., Hao, Y., Ma, S., Sui, Z. and Wei, F.
       (2023). Why Can GPT Learn In-Context? Language Models Secretly Perform
       Gradient Descent as Meta-Optimizers. Findings of ACL 2023.

    Examples
    --------
    >>> import numpy as np
    >>> from hyptest.metrics.dai import simaou
    >>> zs = np.array([[[1.0, 0.0]]])
    >>> icl = np.array([[[0.0, 2.0]]])    # unit: (0, 1); update (-1, 1)
    >>> ft = np.array([[[1.0, 1.0]]])     # unit: (0.707, 0.707); update (-0.293, 0.707)
    >>> np.round(simaou(icl, ft, zs), 4)  # (0.293 + 0.707) / (1.4142 * 0.7654)
    array([[0.9239]])
    """
    norm = validate_flag(normalise, "normalise")
    a = _validate_real(icl, "icl", min_ndim=1)
    f = _validate_real(ft, "ft", min_ndim=1)
    z = _validate_real(zs, "zs", min_ndim=1)
    _validate_same_shape({"icl": a, "ft": f, "zs": z})
    if norm:
        a, f, z = _unit(a), _unit(f), _unit(z)
    return _cosine(a - z, f - z)


def simaou_random_baseline(
    icl: ArrayLike,
    zs: ArrayLike,
    *,
    rng: np.random.Generator | int,
    normalise: bool = True,
    distribution: str = "normal",
) -> np.ndarray:
    """SimAOU of the ICL update against a random update direction (the baseline).

    Parameters
    ----------
    icl, zs : array_like, shape (n_examples, n_layers, hidden)
        Attention outputs at the last position under ICL and zero-shot.
    rng : numpy.random.Generator or int
        Source of the random directions (an int seeds ``default_rng``).
    normalise : bool, default True
        Scale ICL and ZS to unit length first, as in :func:`simaou`.
    distribution : {"normal", "uniform"}, default "normal"
        ``"normal"``: i.i.d. standard normal entries, an isotropic random
        direction.  ``"uniform"``: i.i.d. uniform on ``[0, 1)``, what the
        reference code draws (``np.random.random``); see Notes.

    Returns
    -------
    numpy.ndarray, shape (n_examples, n_layers)
        Cosine of ``ICL - ZS`` and the random vector; NaN where the ICL
        update is zero.

    Raises
    ------
    ValueError
        If shapes differ, values are non-finite or `distribution` is unknown.
    TypeError
        If `rng` is not a Generator or an integer seed.

    Notes
    -----
    .. math:: \\cos\\big(\\hat h_{\\mathrm{ICL}} - \\hat h_{\\mathrm{ZS}},\\ R\\big),
        \\quad R_{ij\\cdot} \\sim \\mathcal N(0, I_d)\\ \\text{i.i.d.}

    For the Gaussian draw the cosine has mean 0 and standard deviation
    :math:`1/\\sqrt d` for every fixed update, so it is the null value of
    "no alignment".  The reference code draws uniform ``[0, 1)`` entries,
    which all point into the positive orthant: their cosine with an update
    ``u`` concentrates near :math:`\\sqrt 3\\, \\bar u \\sqrt d / (2 \\|u\\|)`,
    not 0, so that baseline depends on the mean of the update's
    coordinates.  ``"uniform"`` reproduces the published baseline;
    ``"normal"`` is the unbiased one.

    References
    ----------
    .. [1] Dai, D., Sun, Y., Dong, L., Hao, Y., Ma, S., Sui, Z. and Wei, F.
       (2023). Why Can GPT Learn In-Context? Language Models Secretly Perform
       Gradient Descent as Meta-Optimizers. Findings of ACL 2023.

    Examples
    --------
    >>> import numpy as np
    >>> from hyptest.metrics.dai import simaou_random_baseline
    >>> gen = np.random.default_rng(0)
    >>> icl, zs = gen.normal(size=(200, 2, 256)), gen.normal(size=(200, 2, 256))
    >>> base = simaou_random_baseline(icl, zs, rng=1)
    >>> base.shape, bool(abs(base.mean()) < 0.01)
    ((200, 2), True)
    """
    norm = validate_flag(normalise, "normalise")
    gen = validate_rng(rng, allow_none=False)
    a = _validate_real(icl, "icl", min_ndim=1)
    z = _validate_real(zs, "zs", min_ndim=1)
    _validate_same_shape({"icl": a, "zs": z})
    validate_choice(distribution, "distribution", _DISTRIBUTIONS)
    if norm:
        a, z = _unit(a), _unit(z)
    if distribution == "normal":
        rand = gen.standard_normal(a.shape)
    else:
        rand = gen.random(a.shape)
    return _cosine(a - z, rand)


# ---------------------------------------------------------------------------
# SimAM
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimAMResult:
    """Attention-map similarities per example and layer (heads averaged).

    Attributes
    ----------
    icl_ft : numpy.ndarray
        SimAM: cosine of the ICL and FT attention maps.
    icl_zs : numpy.ndarray
        Cosine of the ICL and ZS maps, the baseline of Dai et al.'s code
        ("ZSL SimAM").
    zs_ft : numpy.ndarray
        Cosine of the ZS and FT maps: how far fine-tuning moved the map.
    """

    icl_ft: np.ndarray
    icl_zs: np.ndarray
    zs_ft: np.ndarray


def simam(icl_map: ArrayLike, ft_map: ArrayLike, zs_map: ArrayLike) -> SimAMResult:
    """Similarity of attention maps, ICL vs fine-tuning (SimAM), with its baselines.

    Parameters
    ----------
    icl_map, ft_map, zs_map : array_like, shape (n_examples, n_layers, n_heads, n_positions)
        Pre-softmax attention scores of the last (scored) position to each
        position of the query text (the positions common to the ZS, ICL and
        FT prompts), under ICL, after fine-tuning, and zero-shot.  Ragged
        lengths must be padded with 0 on the same positions in all three
        (zero padding leaves the cosine unchanged; the reference code pads
        with 0 on the left).

    Returns
    -------
    SimAMResult
        ``icl_ft`` (SimAM), ``icl_zs`` and ``zs_ft``, each of shape
        ``(n_examples, n_layers)``.

    Raises
    ------
    ValueError
        If shapes differ, an input has fewer than 2 dimensions, or values
        are non-finite.

    Notes
    -----
    For each example, layer and head ``h``, the cosine over positions of
    the two score vectors, then the mean over heads:

    .. math::
        \\mathrm{SimAM}_{\\ell} = \\frac1H \\sum_{h=1}^H
        \\cos\\big(s^{\\mathrm{ICL}}_{\\ell h}, s^{\\mathrm{FT}}_{\\ell h}\\big).

    Scores are compared before the softmax, as in the reference code
    (``analyze_attn_map(..., softmax=False)``); the heads are averaged
    after the cosine, not before.  A head whose score vector is all zero
    gives NaN, which propagates into the head mean.  Baseline: Dai et al.'s
    code reports ``cos(ICL, ZS)`` ("ZSL SimAM"), returned as ``icl_zs``;
    ``zs_ft`` is returned as well.  Symmetric in the two maps compared and
    invariant to positive rescaling of a map.

    References
    ----------
    .. [1] Dai, D., Sun, Y., Dong, L., Hao, Y., Ma, S., Sui, Z. and Wei, F.
       (2023). Why Can GPT Learn In-Context? Language Models Secretly Perform
       Gradient Descent as Meta-Optimizers. Findings of ACL 2023.

    Examples
    --------
    >>> import numpy as np
    >>> from hyptest.metrics.dai import simam
    >>> icl = np.array([[[[1.0, 0.0], [1.0, 1.0]]]])  # 1 example, 1 layer, 2 heads
    >>> ft = np.array([[[[1.0, 1.0], [1.0, 1.0]]]])
    >>> zs = np.array([[[[0.0, 1.0], [1.0, -1.0]]]])
    >>> res = simam(icl, ft, zs)
    >>> np.round(res.icl_ft, 4)  # (0.7071 + 1) / 2
    array([[0.8536]])
    >>> res.icl_zs, res.zs_ft    # (0 + 0) / 2 and (0.7071 + 0) / 2
    (array([[0.]]), array([[0.35355339]]))
    """
    a = _validate_real(icl_map, "icl_map", min_ndim=2)
    f = _validate_real(ft_map, "ft_map", min_ndim=2)
    z = _validate_real(zs_map, "zs_map", min_ndim=2)
    _validate_same_shape({"icl_map": a, "ft_map": f, "zs_map": z})
    return SimAMResult(
        icl_ft=_cosine(a, f).mean(axis=-1),
        icl_zs=_cosine(a, z).mean(axis=-1),
        zs_ft=_cosine(z, f).mean(axis=-1),
    )


# ---------------------------------------------------------------------------
# Kendall
# ---------------------------------------------------------------------------


def kendall_attention(icl_scores: ArrayLike, ft_scores: ArrayLike) -> np.ndarray:
    """Kendall rank correlation (tau-b) of attention to demonstration tokens, ICL vs FT.

    Parameters
    ----------
    icl_scores, ft_scores : array_like, shape (n_examples, n_layers, n_positions)
        Attention of the scored position to each demonstration token (or
        each demonstration, when summed over its tokens) under ICL, and the
        fine-tuning counterpart (the zero-shot query attending to the
        training tokens' queries, as in Dai et al.).  Any leading shape;
        ``n_positions >= 2``.  Pre- or post-softmax gives the same value.

    Returns
    -------
    numpy.ndarray, shape (n_examples, n_layers)
        Kendall's tau-b in ``[-1, 1]``; NaN where either input is constant
        along the position axis (as in ``scipy.stats.kendalltau``).

    Raises
    ------
    ValueError
        If shapes differ, there are fewer than 2 positions, or values are
        non-finite.

    See Also
    --------
    kendall_random_baseline

    Notes
    -----
    Over the pairs :math:`i < j` of positions, with
    :math:`s^x_{ij} = \\mathrm{sign}(x_j - x_i)`,

    .. math::
        \\tau_b = \\frac{\\sum_{i<j} s^x_{ij} s^y_{ij}}
        {\\sqrt{\\sum_{i<j} (s^x_{ij})^2\\ \\sum_{i<j} (s^y_{ij})^2}}
        = \\frac{n_c - n_d}{\\sqrt{(n_0 - n_1)(n_0 - n_2)}},

    the tau-b of ``scipy.stats.kendalltau`` (its default), which the
    reference code calls.  Computed by blocked pairwise signs, vectorised
    over the leading axes: :math:`O(n^2)` time per row, bounded memory.  A
    rank statistic, so any strictly increasing transform of a row (such as
    the softmax) leaves it unchanged.  Symmetric in the two inputs.

    References
    ----------
    .. [1] Dai, D., Sun, Y., Dong, L., Hao, Y., Ma, S., Sui, Z. and Wei, F.
       (2023). Why Can GPT Learn In-Context? Language Models Secretly Perform
       Gradient Descent as Meta-Optimizers. Findings of ACL 2023.
    .. [2] Kendall, M. G. (1945). The treatment of ties in ranking problems.
       *Biometrika*, 33(3), 239-251.

    Examples
    --------
    >>> from hyptest.metrics.dai import kendall_attention
    >>> # 3 pairs: (1,2) concordant, (1,3) concordant, (2,3) discordant
    >>> round(float(kendall_attention([0.1, 0.5, 0.4], [1.0, 2.0, 3.0])), 4)
    0.3333
    """
    x = _validate_real(icl_scores, "icl_scores", min_ndim=1, min_last=2)
    y = _validate_real(ft_scores, "ft_scores", min_ndim=1, min_last=2)
    _validate_same_shape({"icl_scores": x, "ft_scores": y})
    return _kendall_tau_b(x, y)[()]


def kendall_random_baseline(icl_scores: ArrayLike, *, rng: np.random.Generator | int) -> np.ndarray:
    """Kendall tau-b of the ICL attention against random attention weights (the baseline).

    Parameters
    ----------
    icl_scores : array_like, shape (n_examples, n_layers, n_positions)
        Attention of the scored position to the demonstration tokens under ICL.
    rng : numpy.random.Generator or int
        Source of the random weights (an int seeds ``default_rng``).

    Returns
    -------
    numpy.ndarray, shape (n_examples, n_layers)
        tau-b of each row against i.i.d. uniform ``[0, 1)`` weights; NaN
        where the ICL row is constant.

    Raises
    ------
    ValueError
        If there are fewer than 2 positions or values are non-finite.
    TypeError
        If `rng` is not a Generator or an integer seed.

    Notes
    -----
    The reference code draws ``np.random.random`` weights.  Any continuous
    i.i.d. law gives the same null distribution (all rankings of the random
    row equally likely, no ties), with mean 0 and, for a tie-free ICL row,
    variance :math:`2(2n + 5) / (9 n (n - 1))`.

    References
    ----------
    .. [1] Dai, D., Sun, Y., Dong, L., Hao, Y., Ma, S., Sui, Z. and Wei, F.
       (2023). Why Can GPT Learn In-Context? Language Models Secretly Perform
       Gradient Descent as Meta-Optimizers. Findings of ACL 2023.

    Examples
    --------
    >>> import numpy as np
    >>> from hyptest.metrics.dai import kendall_random_baseline
    >>> icl = np.random.default_rng(0).random((500, 3, 20))
    >>> tau = kendall_random_baseline(icl, rng=1)
    >>> tau.shape, bool(abs(tau.mean()) < 0.02)
    ((500, 3), True)
    """
    gen = validate_rng(rng, allow_none=False)
    x = _validate_real(icl_scores, "icl_scores", min_ndim=1, min_last=2)
    return _kendall_tau_b(x, gen.random(x.shape))[()]
