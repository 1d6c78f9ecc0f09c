"""A hand-written NumPy peer for benchmarks/run.py: loss_and_grad the way an expert writes it.

``hand_peer(arch, params, x, y)`` returns ``(call, read)`` like the peers of
benchmarks/peers.py.  The forward and backward passes are written out by
hand for one batch size: every activation, delta and gradient lives in an
array allocated once, when the peer is made, and each call fills them with
in-place ufuncs (``out=``) and ``np.dot`` on 2-D arrays (``out=`` too).
Derivatives come from stored activations (tanh' = 1 - a², sigmoid' =
s (1 - s), relu' = sign(a)); the softmax cross-entropy shifts by the row
maximum (log-sum-exp); bias gradients and row sums are products with a
vector of ones.  The gradients a call returns are those arrays, so the next
call overwrites them; ``read`` copies.

Supported architectures (anything else raises NotImplementedError, which
run.py shows as "-"):

* ``dense`` layers (activation identity, tanh or relu) on a flat input, with
  ``softmax_cross_entropy`` (integer labels) or ``mse``, mean over samples;
* one ``rnn`` (tanh) or ``lstm`` layer (gates i, f, g, o in the columns of
  Wx (F, 4H), Wh (H, 4H) and b (4H), like bpgen) on a sequence input, then
  ``dense`` layers at every step, ``mse`` over all steps (mean over samples
  and steps): backpropagation through time by hand, the forward pass over
  the steps keeping what the backward pass needs.  The sequences are
  processed time-major, (N, T, F) -> (T, N, F), so that a step's rows are
  contiguous; the products that do not recur (the input projection of every
  step, the dense head, and the weight gradients, Wh's included) are single
  matrix products over all T * N rows, and only h @ Wh (forward) and
  delta @ Wh^T (backward) are computed step by step, the latter with a
  contiguous copy of Wh^T made at each call (OpenBLAS is markedly slower on a
  transposed right operand with this few rows).  The factors of the backward
  step that do not depend on the recursion (1 - h², or the LSTM's gate
  derivatives times what multiplies them) are computed for all steps at once
  before it, so that a step is a few ufuncs on (N, H) or (N, 4H) arrays;
* ``regularization: {l2: lam}``: 0.5 * lam * the squares of every W, Wx, Wh.

The LSTM's sigmoid is s(a) = 0.5 + 0.5 tanh(a / 2): with the i, f and o
columns of Wx, Wh and b halved (a copy made at each call, as small as the
parameters) one ``tanh`` over a step's (N, 4H) pre-activations, a multiply
and an add give all four gates.
"""
import numpy as np

CE = "softmax_cross_entropy"
WEIGHTS = ("W", "Wx", "Wh")             # what l2 regularizes (not biases)


def hand_peer(arch, params, x, y):
    """(call, read) of the hand-written loss_and_grad on these parameters and data."""
    net = HandNet(arch, params, x)

    def call():
        return net.loss_and_grad(params, x, y)

    def read(result):
        loss, grads = result
        return loss, {k: g.copy() for k, g in grads.items()}
    return call, read


def _loss_kind(arch):
    loss = arch["loss"]
    if isinstance(loss, str):
        return loss, "all"
    return loss["type"], loss.get("steps", "all")


class HandNet:
    """loss_and_grad of one architecture at one batch size, on preallocated arrays."""

    def __init__(self, arch, params, x):
        if arch.get("bptt"):
            raise NotImplementedError("hand NumPy: bptt is not implemented")
        self.dtype = dt = np.dtype(arch["dtype"])
        self.loss, steps = _loss_kind(arch)
        if self.loss not in (CE, "mse"):
            raise NotImplementedError(f"hand NumPy: loss {self.loss} is not implemented")
        self.lam = float((arch.get("regularization") or {}).get("l2", 0.0))
        layers = [(layer.get("name", f"l{i}"), layer) for i, layer in enumerate(arch["layers"])]
        self.sequence = "steps" in arch["input"]
        self.rec = None
        if self.sequence:
            if self.loss != "mse" or steps != "all":
                raise NotImplementedError("hand NumPy: sequences take mse over all steps")
            (name, layer), layers = layers[0], layers[1:]
            act = layer.get("activation") or "tanh"
            if layer["type"] not in ("rnn", "lstm") or act != "tanh":
                raise NotImplementedError(f"hand NumPy: layer {layer} is not implemented")
            self.rec = (name, layer["type"])
            n, steps_t, feats = x.shape
            rows = steps_t * n
        else:
            if "features" not in arch["input"]:
                raise NotImplementedError("hand NumPy: image inputs are not implemented")
            n, rows = x.shape[0], x.shape[0]
        self.n, self.rows = n, rows
        self.dense = []
        for name, layer in layers:
            act = layer.get("activation") or "identity"
            if layer["type"] != "dense" or act not in ("identity", "tanh", "relu"):
                raise NotImplementedError(f"hand NumPy: layer {layer} is not implemented")
            self.dense.append((name, act))
        if not self.dense:
            raise NotImplementedError("hand NumPy: expected a dense output layer")

        # gradients, returned by every call (overwritten by the next)
        self.grads = {k: np.empty(v.shape, dt) for k, v in params.items()}
        self.l2_keys = [k for k in params if self.lam and k.rsplit(".", 1)[-1] in WEIGHTS]
        self.l2_tmp = {k: np.empty(params[k].shape, dt) for k in self.l2_keys}

        # dense stack: its outputs (rows, units); deltas[l] is the gradient
        # w.r.t. the input of layer l (None for a flat network's first layer)
        self.acts = [np.empty((rows, params[name + ".W"].shape[1]), dt)
                     for name, _ in self.dense]
        self.deltas = [np.empty((rows, params[name + ".W"].shape[0]), dt)
                       for name, _ in self.dense]
        if not self.sequence:
            self.deltas[0] = None
        self.ones = np.ones(rows, dt)           # bias gradients: ones @ delta
        self.zero = dt.type(0)
        if self.loss == CE:
            k = self.acts[-1].shape[1]
            self.ones_k = np.ones(k, dt)
            self.row_start = np.arange(0, rows * k, k)    # flat index of each row's first logit
            self.label_idx = np.empty(rows, np.intp)
            self.rowbuf, self.rowbuf2 = np.empty(rows, dt), np.empty(rows, dt)

        if self.rec:
            name, kind = self.rec
            hid = params[name + ".Wh"].shape[0]
            t, h = steps_t, hid
            self.xt = np.empty((t, n, feats), dt)                 # x, time-major
            self.hs = np.empty((t, n, h), dt)                     # h of every step
            self.dhs = self.deltas[0].reshape(t, n, h)            # dL/dh of every step
            self.tmp = np.empty((n, h), dt)
            self.wh_t = np.empty((params[name + ".Wh"].shape[1], h), dt)    # Wh^T, contiguous
            if kind == "rnn":
                self.dtanh = np.empty((t, n, h), dt)              # 1 - h^2
            else:
                self.gates = np.empty((t, n, 4 * h), dt)          # i, f, g, o
                self.cs = np.empty((t, n, h), dt)                 # c of every step
                self.tcs = np.empty((t, n, h), dt)                # tanh(c), then o (1 - tanh(c)^2)
                self.fac = np.empty((t, n, 4 * h), dt)            # gate factors, then dL/da
                self.dc = np.empty((n, h), dt)
                self.tmp4 = np.empty((n, 4 * h), dt)
                half = np.full(4 * h, 0.5, dt)
                half[2 * h:3 * h] = 1                             # g is a plain tanh
                self.scale, self.shift = half, np.where(half == 1, 0, half).astype(dt)
                self.wx_s = np.empty(params[name + ".Wx"].shape, dt)
                self.wh_s = np.empty((h, 4 * h), dt)
                self.b_s = np.empty(4 * h, dt)

    # ------------------------------------------------------------------ the call

    def loss_and_grad(self, params, x, y):
        grads = self.grads
        if self.rec:
            rec_name, kind = self.rec
            np.copyto(self.xt, x.transpose(1, 0, 2))
            (self._elman_forward if kind == "rnn" else self._lstm_forward)(params, rec_name)
            inp = self.hs.reshape(self.rows, -1)
        else:
            inp = x
        h = inp
        for (name, act), out in zip(self.dense, self.acts):
            np.dot(h, params[name + ".W"], out=out)
            out += params[name + ".b"]
            if act == "tanh":
                np.tanh(out, out=out)
            elif act == "relu":
                np.maximum(out, self.zero, out=out)
            h = out
        loss = self._loss(h, y)                 # h becomes dL/d(output)
        d = h
        for layer in range(len(self.dense) - 1, -1, -1):
            name, _ = self.dense[layer]
            prev = self.acts[layer - 1] if layer else inp
            np.dot(prev.T, d, out=grads[name + ".W"])
            np.dot(self.ones, d, out=grads[name + ".b"])
            dprev = self.deltas[layer]
            if dprev is None:
                break
            np.dot(d, params[name + ".W"].T, out=dprev)
            if layer:                           # through the previous layer's activation,
                a, act = prev, self.dense[layer - 1][1]     # which is not needed any more
                if act == "tanh":                           # dprev * (1 - a^2)
                    np.multiply(a, a, out=a)
                    a *= dprev
                    dprev -= a
                elif act == "relu":                         # a >= 0: relu' = sign(a)
                    np.sign(a, out=a)
                    dprev *= a
            d = dprev
        if self.rec:
            (self._elman_backward if kind == "rnn" else self._lstm_backward)(params, rec_name)
        if self.lam:
            for k in self.l2_keys:
                w, tmp = params[k], self.l2_tmp[k]
                loss += 0.5 * self.lam * float(np.vdot(w, w))
                np.multiply(w, self.lam, out=tmp)
                grads[k] += tmp
        return loss, grads

    def _loss(self, out, y):
        """The mean loss; out (rows, K) is overwritten with dL/d(out)."""
        rows = self.rows
        if self.loss == "mse":
            if self.sequence:
                o3 = out.reshape(-1, self.n, out.shape[1])
                np.subtract(o3, y.transpose(1, 0, 2), out=o3)
            else:
                np.subtract(out, y, out=out)
            loss = 0.5 * float(np.vdot(out, out)) / rows
            out *= 1.0 / rows
            return loss
        # softmax cross-entropy, shifted by the row maximum m: per sample
        # log(sum(exp(o - m))) - (o - m)[label]
        s, picked, idx, flat = self.rowbuf, self.rowbuf2, self.label_idx, out.reshape(-1)
        np.add(self.row_start, y, out=idx)
        np.maximum.reduce(out, axis=1, out=s)
        out -= s[:, None]
        np.take(flat, idx, out=picked)
        loss = -float(np.dot(self.ones, picked))
        np.exp(out, out=out)
        np.dot(out, self.ones_k, out=s)         # row sums
        np.log(s, out=picked)
        loss = (loss + float(np.dot(self.ones, picked))) / rows
        np.divide(1.0 / rows, s, out=s)
        out *= s[:, None]                       # softmax / N
        np.subtract.at(flat, idx, 1.0 / rows)
        return loss

    # ------------------------------------------------------------------- Elman

    def _elman_forward(self, params, name):
        hs, tmp, wh = self.hs, self.tmp, params[name + ".Wh"]
        t, n, feats = self.xt.shape
        h2 = hs.reshape(t * n, -1)
        np.dot(self.xt.reshape(t * n, feats), params[name + ".Wx"], out=h2)
        h2 += params[name + ".b"]
        dot, tanh = np.dot, np.tanh
        tanh(hs[0], out=hs[0])
        for s in range(1, t):
            h = hs[s]
            dot(hs[s - 1], wh, out=tmp)
            h += tmp
            tanh(h, out=h)

    def _elman_backward(self, params, name):
        hs, dhs, dtanh, tmp, g = self.hs, self.dhs, self.dtanh, self.tmp, self.grads
        (t, n, feats), hid, dot = self.xt.shape, hs.shape[2], np.dot
        np.multiply(hs, hs, out=dtanh)
        np.subtract(1, dtanh, out=dtanh)
        wh_t = self.wh_t                # d @ Wh^T is faster on a contiguous copy of Wh^T
        np.copyto(wh_t, params[name + ".Wh"].T)
        for s in range(t - 1, -1, -1):
            d = dhs[s]
            d *= dtanh[s]                       # dL/d(pre-activation) of step s
            if s:
                dot(d, wh_t, out=tmp)
                dhs[s - 1] += tmp
        dz = dhs.reshape(t * n, hid)
        np.dot(self.xt.reshape(t * n, feats).T, dz, out=g[name + ".Wx"])
        np.dot(hs[:-1].reshape((t - 1) * n, hid).T, dhs[1:].reshape((t - 1) * n, hid),
               out=g[name + ".Wh"])
        np.dot(self.ones, dz, out=g[name + ".b"])

    # -------------------------------------------------------------------- LSTM

    def _lstm_forward(self, params, name):
        gates, cs, tcs, hs = self.gates, self.cs, self.tcs, self.hs
        tmp, tmp4, scale, shift = self.tmp, self.tmp4, self.scale, self.shift
        t, n, feats = self.xt.shape
        h = hs.shape[2]
        np.multiply(params[name + ".Wx"], scale, out=self.wx_s)   # a / 2 for i, f, o
        np.multiply(params[name + ".Wh"], scale, out=self.wh_s)
        np.multiply(params[name + ".b"], scale, out=self.b_s)
        wh_s = self.wh_s
        g2 = gates.reshape(t * n, 4 * h)
        np.dot(self.xt.reshape(t * n, feats), self.wx_s, out=g2)
        g2 += self.b_s
        dot, tanh, mul = np.dot, np.tanh, np.multiply
        for s in range(t):
            a = gates[s]
            if s:
                dot(hs[s - 1], wh_s, out=tmp4)
                a += tmp4
            tanh(a, out=a)
            a *= scale                          # sigmoid = 0.5 tanh(a / 2) + 0.5
            a += shift
            c = cs[s]
            mul(a[:, :h], a[:, 2 * h:3 * h], out=c)        # i g
            if s:
                mul(a[:, h:2 * h], cs[s - 1], out=tmp)     # + f c_prev
                c += tmp
            tanh(c, out=tcs[s])
            mul(a[:, 3 * h:], tcs[s], out=hs[s])           # o tanh(c)

    def _lstm_backward(self, params, name):
        gates, cs, tcs, hs, dhs, fac = self.gates, self.cs, self.tcs, self.hs, self.dhs, self.fac
        dc, tmp, g = self.dc, self.tmp, self.grads
        t, n, feats = self.xt.shape
        h = hs.shape[2]
        g4, f4 = gates.reshape(t, n, 4, h), fac.reshape(t, n, 4, h)
        i, f, gg, o = (g4[:, :, k] for k in range(4))
        # the factors of dL/da that do not depend on the recursion, for every step:
        # i: g i(1-i), f: c_prev f(1-f), g: i (1-g^2) (times dc); o: tanh(c) o(1-o) (times dh)
        np.subtract(1, g4[:, :, :2], out=f4[:, :, :2])
        f4[:, :, :2] *= g4[:, :, :2]
        f4[:, :, 0] *= gg
        f4[1:, :, 1] *= cs[:-1]
        f4[0, :, 1] = 0
        np.multiply(gg, gg, out=f4[:, :, 2])
        np.subtract(1, f4[:, :, 2], out=f4[:, :, 2])
        f4[:, :, 2] *= i
        np.subtract(1, o, out=f4[:, :, 3])
        f4[:, :, 3] *= o
        f4[:, :, 3] *= tcs
        pc = tcs                # o (1 - tanh(c)^2), written over tanh(c), no longer needed
        np.multiply(tcs, tcs, out=pc)
        np.subtract(1, pc, out=pc)
        pc *= o
        wh_t = self.wh_t
        np.copyto(wh_t, params[name + ".Wh"].T)
        dot, mul, dc3 = np.dot, np.multiply, dc[:, None, :]
        for s in range(t - 1, -1, -1):
            dh, fs, fs4 = dhs[s], fac[s], f4[s]
            mul(fs[:, 3 * h:], dh, out=fs[:, 3 * h:])      # dL/da_o
            if s == t - 1:
                mul(dh, pc[s], out=dc)                     # dL/dc
            else:
                mul(dh, pc[s], out=tmp)
                dc += tmp
            mul(fs4[:, :3], dc3, out=fs4[:, :3])           # dL/da_i, _f, _g
            if s:
                dc *= g4[s, :, 1]                          # dL/dc_prev = dc f
                dot(fs, wh_t, out=tmp)
                dhs[s - 1] += tmp
        da = fac.reshape(t * n, 4 * h)
        np.dot(self.xt.reshape(t * n, feats).T, da, out=g[name + ".Wx"])
        np.dot(hs[:-1].reshape((t - 1) * n, h).T, fac[1:].reshape((t - 1) * n, 4 * h),
               out=g[name + ".Wh"])
        np.dot(self.ones, da, out=g[name + ".b"])
