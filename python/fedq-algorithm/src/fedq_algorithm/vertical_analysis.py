"""Analyses over vertically partitioned data: two registries hold different columns of the same
patients under the same pseudonymous ids, and a third organization deals correlated randomness
and combines the result. ``docs/algorithms.md`` ("Vertically partitioned analyses") says what
each party learns.

The task's organizations are, in this order, A and B (the two data parties) and C (the dealer,
which posts the statistics; A and B post ``{"contributed": true}``). The same input goes to all
three, each reading its own part::

    {"analysis": "vertical_summary", "id": "id",
     "a": {"data": "ages", "where": "age > 65", "columns": ["age"]},
     "b": {"data": "diagnoses", "where": "diagnosis == 'E11'", "columns": ["bmi"]}}

Each party's ``where`` selects its rows; the cohort is the patients that both select. A and B
must hold the same ids (one row each; a patient a party knows nothing of is a row with missing
values), which they check by exchanging a digest of them.

Everything statistics need is a matrix product Mᵀ_A·M_B over the patients: M_P holds party P's
columns, each multiplied by its selection e_P (0 or 1), and their pairwise products; entry (i, j)
of the product sums column i of A times column j of B over the cohort. A and B compute it in the
integers mod 2^256 (fixed point: every value times 2^32) with C's correlated randomness, as the
commodity-server scalar product of ``fedq_algorithm.vertical`` does for one vector (Du and
Atallah, 2001), for a whole matrix at once (a Beaver triple of matrices): C gives A random R_A and
r_A (as a seed) and B random R_B and r_B with r_A + r_B = Rᵀ_A·R_B; A sends B M_A + R_A, B sends A
M_B + R_B, B sends A U = (M_A + R_A)ᵀ·M_B + r_B − V_B for a random V_B, and A takes
V_A = U − Rᵀ_A·(M_B + R_B) + r_A, so that V_A + V_B = Mᵀ_A·M_B. A and B send C only the entries the
analysis needs (n, the sums, the sums of squares and products), and C adds them.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
from fractions import Fraction
from typing import Any

from fedq_algorithm.analysis import (
    AnalysisError,
    _fail,
    _finite,
    _label,
    _local_failure,
    crosstab_combine,
    enough,
    linear_combine,
    numeric,
)
from fedq_algorithm.node import Node, NodeError

#: Values are integers mod 2^256: room for 2^32 fixed point on each side of a product of two
#: values up to 2^60, summed over up to 2^64 rows.
BITS = 256
RING = 1 << BITS
WORD = BITS // 8
FRAC = 32
#: The largest magnitude a column's value (or product of two) may have.
LIMIT = float(2**60)
#: A masked matrix travels in one run message: at most this many values (8 MiB).
MAX_VALUES = (8 << 20) // WORD
SIDES = ("a", "b")


# -- what each analysis needs ----------------------------------------------------------------------


class Side:
    """One data party's part of an analysis: its selection and the columns it puts in the
    product (``values``, each a float array over the patients, 0 outside its selection)."""

    def __init__(self, names: list[str], values: list, selected, quadratic: bool) -> None:
        self.names = names
        self.values = values
        self.selected = selected
        self.quadratic = quadratic

    def matrix(self):
        """M_P: the selection, the columns, and (if the analysis needs them) their products,
        i ≤ j, all as floats."""
        import numpy as np

        e = self.selected.astype(float)
        columns = [e] + [e * v for v in self.values]
        if self.quadratic:
            q = len(self.values)
            columns += [e * self.values[i] * self.values[j] for i in range(q) for j in range(i, q)]
        return np.column_stack(columns)


def _spec_side(spec: dict, side: str) -> dict:
    part = spec.get(side)
    if not isinstance(part, dict) or not isinstance(part.get("data"), str):
        raise AnalysisError("bad_input", f'give party {side.upper()}\'s part: "{side}": {{"data": "<label>", …}}')
    return part


def _strings(part: dict, key: str, side: str, *, required: bool = True) -> list[str]:
    names = part.get(key, [])
    if (not isinstance(names, list) or not all(isinstance(c, str) for c in names)) or (required and not names):
        raise AnalysisError("bad_input", f'name party {side.upper()}\'s columns: "{side}": {{"{key}": ["…"]}}')
    return names


def check(spec: dict) -> None:
    """What the request alone decides, alike at every party, before any message."""
    name = spec["analysis"]
    parts = {side: _spec_side(spec, side) for side in SIDES}
    if not isinstance(spec.get("id", "id"), str):
        raise AnalysisError("bad_input", '"id" names the column of the patients\' ids')
    if name in ("vertical_summary", "vertical_correlation"):
        names = [c for side in SIDES for c in _strings(parts[side], "columns", side)]
    elif name == "vertical_crosstab":
        names = []
        for side in SIDES:
            column = parts[side].get("column")
            levels = parts[side].get("levels")
            if not isinstance(column, str) or not isinstance(levels, list) or not levels:
                raise AnalysisError("bad_input", f'give party {side.upper()}\'s column and its levels: '
                                                 f'"{side}": {{"column": "…", "levels": ["…"]}}')
            names.append(column)
    else:
        outcomes = [side for side in SIDES if "outcome" in parts[side]]
        if len(outcomes) != 1 or not isinstance(parts[outcomes[0]]["outcome"], str):
            raise AnalysisError("bad_input", 'one party names the outcome: "a" or "b": {"outcome": "…"}')
        names = [c for side in SIDES for c in _strings(parts[side], "covariates", side, required=False)]
        if not names:
            raise AnalysisError("bad_input", 'name the covariates: "a": {"covariates": ["…"]}, "b": …')
        names.append(parts[outcomes[0]]["outcome"])
    if len(set(names)) != len(names):
        raise AnalysisError("bad_input", "a column is named twice: name each party's columns apart")


def _selection(frame, where: str | None):
    """Whether each row is selected by ``where`` (a pandas query), as a boolean array in the
    frame's order: rows are kept, not dropped, so that A's and B's stay aligned."""
    if not where:
        return frame.index.notna()
    try:
        chosen = frame.query(where, engine="python").index
    except Exception as e:  # the researcher's text; the kind alone, as analysis.load says
        raise AnalysisError("bad_filter", f"the filter {where!r} does not apply here ({type(e).__name__})") from None
    return frame.index.isin(chosen)


def local_side(name: str, frame, part: dict, minimum: int) -> Side:
    """This party's columns for analysis ``name``, checked: what it needs is there, numeric, and
    its own selection holds at least ``minimum`` rows (and, for a crosstab, each of its levels 0
    or at least that many)."""
    import numpy as np

    selected = _selection(frame, part.get("where"))
    if name in ("vertical_summary", "vertical_correlation"):
        columns = part["columns"]
        data = [numeric(frame, c).to_numpy() for c in columns]
        if name == "vertical_summary":
            # Per column, whether it is there, its value and its square where it is: the count,
            # the sum and the sum of squares, and no product of two columns.
            values = []
            for v in data:
                present = ~np.isnan(v)
                values += [present.astype(float), np.where(present, v, 0.0), np.where(present, v * v, 0.0)]
            enough(int(selected.sum()), "this party's selection", minimum)
            return Side(_names_of({"analysis": name, "x": part}, "x"), values, selected, quadratic=False)
        complete = selected & ~np.isnan(np.column_stack(data)).any(axis=1)
        enough(int(complete.sum()), "this party's selection and every column present", minimum)
        return Side(columns, [np.where(complete, v, 0.0) for v in data], complete, quadratic=True)
    if name == "vertical_crosstab":
        column, levels = part["column"], [_label(v) for v in part["levels"]]
        if column not in frame.columns:
            raise AnalysisError("column_missing", f"the data has no column {column!r}")
        series = frame[column]
        text = series.map(_label).where(series.notna(), None)
        indicators = [(text == level).to_numpy() & selected for level in levels]
        present = series.notna().to_numpy() & selected
        enough(int(selected.sum()), "this party's selection", minimum)
        if any(0 < int(i.sum()) < minimum for i in indicators):
            raise AnalysisError("small_cell", f"a level of {column!r} has fewer than {minimum} rows here (the node's "
                                              "policy.min_cell_count); coarsen the levels or widen the filter")
        return Side(levels + [f"{column}:present"], [i.astype(float) for i in indicators + [present]], selected,
                    quadratic=False)
    columns = list(part.get("covariates", [])) + ([part["outcome"]] if "outcome" in part else [])
    data = np.column_stack([numeric(frame, c).to_numpy() for c in columns])
    complete = selected & ~np.isnan(data).any(axis=1)
    enough(int(complete.sum()), "this party's selection and every column of the model present", minimum)
    return Side(columns, [np.where(complete, data[:, k], 0.0) for k in range(len(columns))], complete,
                quadratic=True)


# -- the product -----------------------------------------------------------------------------------


def _fixed(matrix) -> list[list[int]]:
    """A float matrix as integers mod 2^256 (times 2^32); refused if a value is out of range."""
    import numpy as np

    if not np.all(np.abs(matrix) < LIMIT):
        raise AnalysisError("too_large", "a value here (or a product of two) is beyond the fixed-point range of "
                                         "2^60: scale the column down")
    scaled = np.rint(matrix * float(2**FRAC))
    return [[int(v) % RING for v in row] for row in scaled.tolist()]


def _expand(seed: bytes, label: str, count: int) -> list[int]:
    """``count`` uniformly random values mod 2^256 from ``seed`` (SHAKE-256 as the PRF)."""
    stream = hashlib.shake_256(seed + b"/" + label.encode()).digest(count * WORD)
    return [int.from_bytes(stream[i * WORD:(i + 1) * WORD], "little") for i in range(count)]


def _shape(values: list[int], rows: int, cols: int) -> list[list[int]]:
    return [values[i * cols:(i + 1) * cols] for i in range(rows)]


def _encode(values) -> bytes:
    return b"".join(int(v % RING).to_bytes(WORD, "little") for v in values)


def _decode(data: bytes, count: int) -> list[int]:
    if len(data) != count * WORD:
        raise AnalysisError("protocol", f"a message of {len(data)} bytes where {count} values were due")
    return [int.from_bytes(data[i:i + WORD], "little") for i in range(0, len(data), WORD)]


def _flat(m: list[list[int]]) -> list[int]:
    return [v for row in m for v in row]


def _times(left: list[list[int]], right: list[list[int]], pairs: list[tuple[int, int]]) -> list[int]:
    """Entries ``pairs`` of leftᵀ·right mod 2^256 (both m × columns)."""
    import numpy as np

    a = np.array(left, dtype=object)
    b = np.array(right, dtype=object)
    return [int(a[:, i].dot(b[:, j])) % RING for i, j in pairs]


def needed(name: str, a_columns: int, b_columns: int, a_values: int, b_values: int) -> list[tuple[int, int]]:
    """Which entries of Mᵀ_A·M_B analysis ``name`` reads, for parties with ``a_columns`` and
    ``b_columns`` columns in M of which ``a_values`` and ``b_values`` are values (the others
    their selection and their values' products): the cohort's size; for a summary, each party's
    sums over the cohort (its columns against the other's selection); for a crosstab, each value
    of A against each of B's (the cells); for a correlation or a regression, both. Only these
    entries' shares reach C; the others (products of three or four values among them) are never
    formed anywhere."""
    pairs = [(0, 0)]
    if name != "vertical_crosstab":
        pairs += [(i, 0) for i in range(1, a_columns)] + [(0, j) for j in range(1, b_columns)]
    if name != "vertical_summary":
        pairs += [(1 + i, 1 + j) for i in range(a_values) for j in range(b_values)]
    return pairs


def _signed(v: int) -> int:
    return v - RING if v >= RING // 2 else v


class Channel:
    """The run messages of one analysis between A, B and C."""

    def __init__(self, node: Node, name: str, timeout: float) -> None:
        self.node, self.name, self.timeout = node, name, timeout

    def send(self, to: str, what: str, body: bytes) -> None:
        self.node.send(to, f"{self.name}/{what}", body)

    def send_json(self, to: str, what: str, value: Any) -> None:
        self.send(to, what, json.dumps(value).encode())

    def receive(self, sender: str, what: str) -> bytes:
        try:
            return self.node.receive_one(f"{self.name}/{what}", sender=sender, timeout=self.timeout).body
        except TimeoutError:
            raise AnalysisError("no_answer", f"no {what} from {sender} within {self.timeout:g} s; its result says "
                                             "why") from None

    def receive_json(self, sender: str, what: str) -> Any:
        return json.loads(self.receive(sender, what))


def _ids(frame, column: str) -> list[str]:
    if column not in frame.columns:
        raise AnalysisError("column_missing", f"the data has no id column {column!r}")
    if frame[column].isna().any():
        raise AnalysisError("bad_ids", f"column {column!r} has rows without an id")
    ids = frame[column].map(_label)
    if ids.duplicated().any():
        raise AnalysisError("bad_ids", f"column {column!r} names a patient twice")
    return ids.tolist()


def _digest(ids: list[str]) -> str:
    digest = hashlib.sha256()
    for row_id in sorted(ids):  # each id with its length: no two lists hash alike
        data = row_id.encode()
        digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


def data_party(node: Node, spec: dict, me: str, other: str, dealer: str, channel: Channel) -> None:
    """A's or B's job: its columns, the id check, the masked exchange, its share to C."""
    name = spec["analysis"]
    side = "a" if me == "a" else "b"
    part = spec[side]
    problem, m_rows, digest = None, None, None
    try:
        frame = node.read_dataframe(part["data"])
        ids = _ids(frame, spec.get("id", "id"))
        order = sorted(range(len(ids)), key=ids.__getitem__)
        frame = frame.iloc[order].reset_index(drop=True)
        local = local_side(name, frame, part, node.min_cell_count)
        m_rows = _fixed(local.matrix())
        digest = _digest(ids)
        if len(m_rows) * len(m_rows[0]) > MAX_VALUES:
            raise AnalysisError("too_large", f"{len(m_rows)} rows of {len(m_rows[0])} values are more than one run "
                                             f"message carries ({MAX_VALUES}): select fewer rows or columns")
    except FileNotFoundError:
        problem = AnalysisError("no_data", f"this node grants no data source {part['data']!r} to the analysis")
    except AnalysisError as e:
        problem = e
    except Exception as e:  # noqa: BLE001 - the others must not wait for this part
        problem = _local_failure(e)
    shape = {"ok": problem is None, "rows": len(m_rows) if m_rows else 0,
             "columns": len(m_rows[0]) if m_rows else 0,
             "digest": digest}
    channel.send_json(other, "ids", {k: shape[k] for k in ("ok", "rows", "digest")})
    theirs = channel.receive_json(other, "ids")
    if problem is None and not theirs["ok"]:
        problem = AnalysisError("not_everyone", f"the other data party ({other}) could not take part; its result "
                                                "says why")
    elif problem is None and (theirs["rows"], theirs["digest"]) != (shape["rows"], digest):
        problem = AnalysisError("different_ids", "the two data parties do not hold the same patient ids: each "
                                                 "lists every patient of the study once")
    channel.send_json(dealer, "shape", {"ok": problem is None, "columns": shape["columns"],
                                        "rows": shape["rows"]})
    if problem:
        raise problem
    dealt = channel.receive_json(dealer, "dealt")
    if "stop" in dealt:
        raise AnalysisError("not_everyone", f"the dealer stopped the analysis: {dealt['stop']}")
    # The other party's shape follows from the request: taken from it, not from C, which could
    # otherwise have A and B combine entries other than those the analysis reads.
    their_names = len(_names_of(spec, "b" if side == "a" else "a"))
    rows, mine, theirs_cols = len(m_rows), len(m_rows[0]), _columns_for(name, their_names)
    seed = bytes.fromhex(dealt["seed"])
    mask = _shape(_expand(seed, "R", rows * mine), rows, mine)
    masked = [[(x + r) % RING for x, r in zip(xr, rr)] for xr, rr in zip(m_rows, mask)]
    channel.send(other, "masked", _encode(_flat(masked)))
    their_masked = _shape(_decode(channel.receive(other, "masked"), rows * theirs_cols), rows, theirs_cols)
    if side == "a":
        pairs = needed(name, mine, theirs_cols, len(local.names), their_names)
        r_small = _expand(seed, "r", len(pairs))
        u = _decode(channel.receive(other, "u"), len(pairs))
        # V_A = U − R_Aᵀ·(M_B + R_B) + r_A, for the entries read.
        rt_b = _times(mask, their_masked, pairs)
        share = [(x - y + r) % RING for x, y, r in zip(u, rt_b, r_small)]
    else:
        pairs = needed(name, theirs_cols, mine, their_names, len(local.names))
        r_b = [int(v, 16) for v in dealt["r"]]
        v_b = [secrets.randbits(BITS) for _ in pairs]
        # U = (M_A + R_A)ᵀ·M_B + r_B − V_B: uniformly random to A, whatever M_B is.
        product = _times(their_masked, m_rows, pairs)
        channel.send(other, "u", _encode([(x + r - v) % RING for x, r, v in zip(product, r_b, v_b)]))
        share = v_b
    channel.send(dealer, f"share-{side}", _encode(share))


def dealer(node: Node, spec: dict, a: str, b: str, channel: Channel) -> dict:
    """C's job: the correlated randomness, then the sum of A's and B's shares: the entries."""
    shapes = {a: channel.receive_json(a, "shape"), b: channel.receive_json(b, "shape")}

    def stop(error: AnalysisError) -> AnalysisError:
        # A party that said it can go on waits for what C deals: tell it not to.
        for org in (a, b):
            channel.send_json(org, "dealt", {"stop": error.message})
        return error

    if not all(s["ok"] for s in shapes.values()):
        failed = [org for org, s in shapes.items() if not s["ok"]]
        raise stop(AnalysisError("not_everyone", f"{len(failed)} of the 2 data parties could not take part; their "
                                                 "results say why"))
    rows = shapes[a]["rows"]
    ca, cb = shapes[a]["columns"], shapes[b]["columns"]
    na, nb = len(_names_of(spec, "a")), len(_names_of(spec, "b"))
    expected = (_columns_for(spec["analysis"], na), _columns_for(spec["analysis"], nb))
    if shapes[b]["rows"] != rows or (ca, cb) != expected or rows * max(ca, cb) > MAX_VALUES:
        # Each party's shape follows from the request and the rows both hold: a party that says
        # otherwise would have C deal randomness that does not fit.
        raise stop(AnalysisError("protocol", "the data parties' shapes do not agree with each other or with the "
                                             "request"))
    pairs = needed(spec["analysis"], ca, cb, na, nb)
    seed_a, seed_b = secrets.token_bytes(32), secrets.token_bytes(32)
    r_a_matrix = _shape(_expand(seed_a, "R", rows * ca), rows, ca)
    r_b_matrix = _shape(_expand(seed_b, "R", rows * cb), rows, cb)
    r_a = _expand(seed_a, "r", len(pairs))
    # r_A + r_B = R_Aᵀ·R_B on the entries read.
    r_b = [(x - y) % RING for x, y in zip(_times(r_a_matrix, r_b_matrix, pairs), r_a)]
    channel.send_json(a, "dealt", {"seed": seed_a.hex()})
    channel.send_json(b, "dealt", {"seed": seed_b.hex(), "r": [format(v, "x") for v in r_b]})
    share_a = _decode(channel.receive(a, "share-a"), len(pairs))
    share_b = _decode(channel.receive(b, "share-b"), len(pairs))
    scale = Fraction(1, 1 << (2 * FRAC))
    return {pair: _signed((x + y) % RING) * scale for pair, x, y in zip(pairs, share_a, share_b)}


# -- the statistics --------------------------------------------------------------------------------


def _columns_for(name: str, values: int) -> int:
    """How many columns M has for ``values`` values: the selection, the values, and for a
    correlation or a regression their products."""
    quadratic = name in ("vertical_correlation", "vertical_linear")
    return 1 + values + (values * (values + 1) // 2 if quadratic else 0)


def _squares(q: int) -> dict[tuple[int, int], int]:
    """Where the product of values i ≤ j sits among M's columns (after the selection and the
    ``q`` values, as ``Side.matrix`` puts them)."""
    pairs = [(i, j) for i in range(q) for j in range(i, q)]
    return {pair: 1 + q + at for at, pair in enumerate(pairs)}


class Moments:
    """Sums over the cohort, read from the product's entries by the columns' names."""

    def __init__(self, entries: dict, a_names: list[str], b_names: list[str]) -> None:
        self.entries, self.a, self.b = entries, a_names, b_names
        self.a_square, self.b_square = _squares(len(a_names)), _squares(len(b_names))

    @property
    def n(self) -> Fraction:
        return self.entries[(0, 0)]

    def total(self, column: str) -> Fraction:
        if column in self.a:
            return self.entries[(1 + self.a.index(column), 0)]
        return self.entries[(0, 1 + self.b.index(column))]

    def product(self, x: str, y: str) -> Fraction:
        if x in self.a and y in self.a:
            i, j = sorted((self.a.index(x), self.a.index(y)))
            return self.entries[(self.a_square[(i, j)], 0)]
        if x in self.b and y in self.b:
            i, j = sorted((self.b.index(x), self.b.index(y)))
            return self.entries[(0, self.b_square[(i, j)])]
        if x in self.b:
            x, y = y, x
        return self.entries[(1 + self.a.index(x), 1 + self.b.index(y))]


def _names_of(spec: dict, side: str) -> list[str]:
    """The names a party gives its columns in the product (as ``local_side`` does)."""
    part = spec[side]
    name = spec["analysis"]
    if name == "vertical_summary":
        return [n for c in part["columns"] for n in (f"{c}\0present", c, f"{c}\0square")]
    if name == "vertical_correlation":
        return list(part["columns"])
    if name == "vertical_crosstab":
        # A NUL in the names: no level of the data is called that.
        return [f"{side}\0{_label(v)}" for v in part["levels"]] + [f"{side}\0present"]
    return list(part.get("covariates", [])) + ([part["outcome"]] if "outcome" in part else [])


def combine(spec: dict, entries: dict, minimum: int) -> dict:
    """The statistics from the entries, at C, whose own ``minimum`` holds for the cohort."""
    name = spec["analysis"]
    moments = Moments(entries, _names_of(spec, "a"), _names_of(spec, "b"))
    n = int(moments.n)
    if n < minimum:
        raise AnalysisError("too_few_rows", f"fewer than {minimum} patients in the cohort both parties select (the "
                                            "dealer's policy.min_cell_count)")
    if name == "vertical_summary":
        out = {}
        for side in SIDES:
            for c in spec[side]["columns"]:
                count = moments.total(f"{c}\0present")
                total = moments.total(c)
                squares = moments.total(f"{c}\0square")
                k = int(count)
                mean = total / count if k else None
                # A value and its square are each rounded to 2^-33: a constant column's variance
                # may come out a hair below 0, which is 0.
                variance = max(Fraction(0), (squares - total * total / count) / (count - 1)) if k > 1 else None
                out[c] = {"count": k, "missing": n - k, "sum": float(total), "mean": _float(mean),
                          "variance": _float(variance),
                          "std": math.sqrt(variance) if variance is not None else None}
        return {"n": n, "columns": out}
    if name == "vertical_crosstab":
        a, b = spec["a"], spec["b"]
        la, lb = [f"a\0{_label(v)}" for v in a["levels"]], [f"b\0{_label(v)}" for v in b["levels"]]
        cells = [int(moments.product(x, y)) for x in la for y in lb]
        if any(0 < c < minimum for c in cells):
            raise AnalysisError("small_cell", f"a cell of the table has fewer than {minimum} patients (the dealer's "
                                              "policy.min_cell_count); coarsen the levels or widen the filters")
        both = int(moments.product("a\0present", "b\0present"))
        total = cells + [n - both, both - sum(cells)]
        ab = {"rows": a["column"], "columns": b["column"], "levels": {a["column"]: a["levels"],
                                                                       b["column"]: b["levels"]}}
        return {"n": n, **crosstab_combine(total, ab, 2)}
    if name == "vertical_correlation":
        columns = [c for side in SIDES for c in spec[side]["columns"]]
        p = len(columns)
        sums = [moments.total(c) for c in columns]
        cov = [[moments.product(columns[i], columns[j]) - sums[i] * sums[j] / n for j in range(p)] for i in range(p)]
        # Below the fixed point's rounding, a variance is 0: the column is constant (pandas' NaN).
        varies = [cov[i][i] > 1e-9 * max(Fraction(1), moments.product(columns[i], columns[i])) for i in range(p)]
        matrix = [[float(cov[i][j] / Fraction(math.sqrt(cov[i][i] * cov[j][j]))) if varies[i] and varies[j]
                   else None for j in range(p)] for i in range(p)]
        return {"columns": columns, "n": n, "matrix": matrix}
    outcome = next(spec[side]["outcome"] for side in SIDES if "outcome" in spec[side])
    covariates = [c for side in SIDES for c in spec[side].get("covariates", [])]
    x = [None] + covariates  # None: the intercept

    def cross(u, v):
        if u is None and v is None:
            return moments.n
        if u is None or v is None:
            return moments.total(v if u is None else u)
        return moments.product(u, v)

    p = len(x)
    total = [n] + [cross(x[i], x[j]) for i in range(p) for j in range(i, p)]
    total += [cross(v, outcome) for v in x] + [moments.product(outcome, outcome), moments.total(outcome)]
    return linear_combine(total, {"outcome": outcome, "covariates": covariates}, 2)


def _float(value: Fraction | None) -> float | None:
    return None if value is None else float(value)


def run(node: Node, spec: dict) -> None:
    """One job of a vertically partitioned analysis, whichever party it is."""
    job = node.job()
    try:
        check(spec)
        orgs = list(job.organizations)
        if len(orgs) != 3 or len(set(orgs)) != 3:
            raise AnalysisError("bad_input", "the task lists three organizations: A and B (the data parties) and C "
                                             "(the dealer), in that order")
    except AnalysisError as e:
        return _fail(node, e)
    a, b, c = orgs
    timeout = spec.get("timeout", 600)
    if not isinstance(timeout, (int, float)) or not 0 < timeout <= 86400:
        return _fail(node, AnalysisError("bad_input", '"timeout" is 1 to 86400 seconds'))
    channel = Channel(node, spec["analysis"], float(timeout))
    try:
        if job.organization == c:
            out = combine(spec, dealer(node, spec, a, b, channel), node.min_cell_count)
            return node.post_json({"analysis": spec["analysis"], "organizations": 3, **_finite(out)})
        me, other = ("a", b) if job.organization == a else ("b", a)
        data_party(node, spec, me, other, c, channel)
    except AnalysisError as e:
        return _fail(node, e)
    except NodeError as e:
        return _fail(node, AnalysisError(e.code, e.message))
    except Exception as e:  # noqa: BLE001 - a message that is not what the protocol says, say
        return _fail(node, _local_failure(e))
    node.post_json({"analysis": spec["analysis"], "contributed": True})
