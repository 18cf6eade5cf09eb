"""A small factorization machine in torch (Rendle, "Factorization Machines", ICDM 2010).

``y(z) = w0 + sum_i w_i z_i + 1/2 sum_f [(sum_i v_if z_i)^2 - sum_i v_if^2 z_i^2]``

fitted by full-batch L-BFGS (strong-Wolfe line search) or Adam on

``L = mean_n (y(z_n) - t_n)^2 + l2_linear * ||w||^2 + l2_factors * ||V||^2``.

Sparse input stays a scipy CSR matrix: the sums over nonzeros are two sparse-dense
products (``X @ [w, V]`` and ``(X*X) @ V^2``) wrapped as a torch autograd op, so a row
costs O(nnz * rank) and 10^4 one-hot columns are cheap. Training is deterministic
for a given ``random_state`` (scipy kernels, float64).

``n_members`` independently initialized members (seeds ``random_state + m``) form a small
ensemble; their spread is a (crude) uncertainty: it reflects only the non-convexity of
the factor part, not a posterior.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def fm_score(X, w0: np.ndarray, w: np.ndarray, V: np.ndarray) -> np.ndarray:
    """FM outputs of every member / posterior sample: [n_rows, S]. w0 [S], w [S,p], V [S,p,k]."""
    S, p, k = V.shape
    lin = np.asarray(X @ w.T)  # [n, S]
    XV = np.asarray(X @ V.transpose(1, 0, 2).reshape(p, S * k)).reshape(-1, S, k)
    X2 = X.multiply(X) if hasattr(X, "multiply") else X ** 2
    X2V2 = np.asarray(X2 @ (V ** 2).transpose(1, 0, 2).reshape(p, S * k)).reshape(-1, S, k)
    return w0[None, :] + lin + 0.5 * (XV ** 2 - X2V2).sum(-1)


class _SparseMatmul:
    """``X @ A`` for a fixed scipy CSR ``X`` as a torch autograd op (backward: ``X^T @ G``).

    scipy's single-threaded CSR kernels are ~5-10x faster here than ``torch.sparse.mm`` /
    ``embedding_bag`` on CPU, and deterministic."""

    def __init__(self, X):
        import torch

        self.X = sp.csr_matrix(X, dtype=np.float64)
        self.XT = self.X.T.tocsr()

        class _Fn(torch.autograd.Function):
            @staticmethod
            def forward(ctx, A):
                return torch.from_numpy(np.asarray(self.X @ A.detach().numpy()))

            @staticmethod
            def backward(ctx, G):
                return torch.from_numpy(np.asarray(self.XT @ G.detach().numpy()))

        self.fn = _Fn

    def __call__(self, A):
        return self.fn.apply(A)


def _forward(X1, X2, w0, w, V):
    """FM outputs of S stacked members, [n, S]. ``w0 [S]``, ``w [p, S]``, ``V [p, S, k]``;
    ``X1`` multiplies by ``X``, ``X2`` by ``X * X`` (elementwise)."""
    import torch

    p, S, k = V.shape
    lv = X1(torch.cat([w, V.reshape(p, S * k)], 1))  # linear terms and sum_i v_if z_i
    xv = lv[:, S:].reshape(-1, S, k)
    x2v2 = X2((V * V).reshape(p, S * k)).reshape(-1, S, k)
    return w0 + lv[:, :S] + 0.5 * (xv * xv - x2v2).sum(2)


class TorchFM:
    """Factorization machine regressor (scikit-learn style; fitted attributes end in ``_``).

    Parameters
    ----------
    rank : number of factors ``k`` per feature.
    l2_linear, l2_factors : L2 penalties on ``w`` and ``V`` (``w0`` is not penalized).
    init_stdev : ``V`` is initialized ``N(0, init_stdev^2)``; ``w`` at 0, ``w0`` at mean(y).
    n_members : independently initialized members (ensemble); ``predict_members`` returns all.
    learning_rate : Adam step size.
    full_batch_max_rows : above this many rows ``"lbfgs"`` switches to mini-batch Adam
        (``n_epochs`` epochs of ``batch_size`` rows): L-BFGS needs ~100 full passes,
        Adam a few epochs, which keeps 10^6 jobs within the training-time target.
    n_iter : L-BFGS iterations, or Adam epochs when ``optimizer="adam"``.
    random_state : seed of member 0 (member ``m`` uses ``random_state + m``).
    """

    def __init__(self, rank: int = 4, l2_linear: float = 1e-3, l2_factors: float = 1e-2, n_iter: int = 200,
                 init_stdev: float = 0.1, n_members: int = 1, optimizer: str = "lbfgs",
                 learning_rate: float = 0.01, full_batch_max_rows: int = 50_000, batch_size: int = 4096,
                 n_epochs: int = 5, random_state: int = 0, num_threads: int = 1):
        self.rank = rank
        self.l2_linear = l2_linear
        self.l2_factors = l2_factors
        self.n_iter = n_iter
        self.init_stdev = init_stdev
        self.n_members = n_members
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.full_batch_max_rows = full_batch_max_rows
        self.batch_size = batch_size
        self.n_epochs = n_epochs
        self.random_state = random_state
        self.num_threads = num_threads

    def fit(self, X, y) -> TorchFM:
        """All members are trained jointly (their losses are summed; the problems are
        independent, one sparse product serves all). Full-batch L-BFGS when
        ``optimizer="lbfgs"`` and ``n_rows <= full_batch_max_rows``; otherwise Adam on
        mini-batches of ``batch_size`` rows for ``n_epochs`` epochs."""
        import torch

        if self.optimizer not in ("lbfgs", "adam"):
            raise ValueError(f"optimizer must be 'lbfgs' or 'adam', got {self.optimizer!r}")
        if int(self.rank) < 1:
            raise ValueError(f"rank must be >= 1 (number of factors), got {self.rank!r}")
        y = np.asarray(y, dtype=np.float64)
        if X.shape[0] != len(y) or not np.isfinite(y).all():
            raise ValueError(f"X has {X.shape[0]} rows but y has {len(y)} (finite: {np.isfinite(y).all()})")
        # Small dense problems: one thread is as fast, and torch's thread pool spin-waits badly
        # when another process holds the second core (measured: a TG-image LODO went from
        # ~1 min to ~10 min under load with 2 threads).
        prev_threads = torch.get_num_threads()
        torch.set_num_threads(int(self.num_threads))
        try:
            return self._fit(X, y, torch)
        finally:
            torch.set_num_threads(prev_threads)

    def _fit(self, X, y, torch):
        X = sp.csr_matrix(X, dtype=np.float64)
        n, p = X.shape
        k, S = int(self.rank), max(1, int(self.n_members))
        gens = [torch.Generator().manual_seed(int(self.random_state) + m) for m in range(S)]
        w0 = torch.full((S,), float(y.mean()), dtype=torch.float64, requires_grad=True)
        w = torch.zeros(p, S, dtype=torch.float64, requires_grad=True)
        V = torch.stack([torch.randn(p, k, generator=g, dtype=torch.float64) for g in gens], 1)
        V = (V * float(self.init_stdev)).requires_grad_(True)
        params = [w0, w, V]

        def loss_fn(X1, X2, yt):
            r = _forward(X1, X2, w0, w, V) - yt[:, None]
            return (r * r).mean(0).sum() + self.l2_linear * (w * w).sum() + self.l2_factors * (V * V).sum()

        full_batch = self.optimizer == "lbfgs" and n <= int(self.full_batch_max_rows)
        if full_batch:
            X1, X2, yt = _SparseMatmul(X), _SparseMatmul(X.multiply(X)), torch.from_numpy(y)
            opt = torch.optim.LBFGS(params, lr=1.0, max_iter=int(self.n_iter), history_size=20,
                                    tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

            def closure():
                opt.zero_grad()
                loss = loss_fn(X1, X2, yt)
                loss.backward()
                return loss

            opt.step(closure)
            self.n_epochs_ = None
        else:
            rng = np.random.default_rng(int(self.random_state))
            perm = rng.permutation(n)
            bs = int(self.batch_size)
            batches = []
            for a in range(0, n, bs):
                Xb = X[perm[a:a + bs]]
                batches.append((_SparseMatmul(Xb), _SparseMatmul(Xb.multiply(Xb)), torch.from_numpy(y[perm[a:a + bs]])))
            opt = torch.optim.Adam(params, lr=float(self.learning_rate))
            n_epochs = int(self.n_epochs) if self.optimizer == "lbfgs" else int(self.n_iter)
            for _ in range(n_epochs):
                for b in rng.permutation(len(batches)):
                    X1, X2, yt = batches[b]
                    opt.zero_grad()
                    loss = loss_fn(X1, X2, yt) * (len(yt) / n) * len(batches)  # penalty weight as full batch
                    loss.backward()
                    opt.step()
            self.n_epochs_ = n_epochs
        self.full_batch_ = bool(full_batch)
        self.w0_ = w0.detach().numpy().copy()
        self.w_ = w.detach().numpy().T.copy()
        self.V_ = V.detach().numpy().transpose(1, 0, 2).copy()
        return self

    def predict_members(self, X) -> np.ndarray:
        """[n_rows, n_members] outputs of every member."""

        return fm_score(sp.csr_matrix(X, dtype=np.float64), self.w0_, self.w_, self.V_)

    def predict(self, X) -> np.ndarray:
        return self.predict_members(X).mean(1)
