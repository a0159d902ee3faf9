"""The bundled benchmark set: the project's own expressions of realistic length, as images.

    python -m benchmarks.bench_set            # rewrites benchmarks/expressions/ (needs matplotlib)

``hmer-bench`` measures on these when no ``--data`` is given. CROHME expressions average 17
tokens and run past 120; these 44 run from 10 to 60 tokens (fractions, scripts, roots, sums,
integrals, limits, matrices of symbols), typeset by matplotlib's mathtext. They are printed,
not handwritten, so the model reads them less well than handwriting: the benchmark reports the
tokens it decoded beside each latency, and for accuracy CROHME (``--data``) is the reference.
Nothing here comes from CROHME.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
FOLDER = HERE / "expressions"
LABELS = FOLDER / "labels.tsv"

#: LaTeX of each benchmark expression, written for this project (CROHME's symbol set).
EXPRESSIONS = [
    r"x^{2}+y^{2}=r^{2}",
    r"\frac{a}{b}+\frac{c}{d}",
    r"\sqrt{x+1}-\sqrt{x-1}",
    r"f(x)=3x^{2}-2x+7",
    r"\sin^{2}\theta+\cos^{2}\theta=1",
    r"e^{i\pi}+1=0",
    r"\frac{1}{2}mv^{2}+mgh",
    r"a_{n+1}=a_{n}+d",
    r"\log_{2}8+\log_{2}4=5",
    r"\sum_{i=1}^{n}i=\frac{n(n+1)}{2}",
    r"x=\frac{-b\pm\sqrt{b^{2}-4ac}}{2a}",
    r"\int_{0}^{1}x^{2}dx=\frac{1}{3}",
    r"\lim_{x\rightarrow0}\frac{\sin x}{x}=1",
    r"(a+b)^{2}=a^{2}+2ab+b^{2}",
    r"\frac{d}{dx}\tan x=\frac{1}{\cos^{2}x}",
    r"\sqrt[3]{27}+\sqrt{16}=7",
    r"y-y_{1}=m(x-x_{1})",
    r"\alpha^{2}+\beta^{2}=\gamma^{2}+1",
    r"|x-3|\leq5\times|x+3|",
    r"\frac{x^{2}-1}{x+1}=x-1",
    r"\sum_{k=0}^{\infty}\frac{x^{k}}{k!}",
    r"\int_{a}^{b}f(x)dx=F(b)-F(a)",
    r"\frac{dy}{dx}=\frac{y}{x}+\frac{x^{2}}{y}",
    r"P(A|B)=\frac{P(B|A)P(A)}{P(B)}",
    r"\sigma^{2}=\frac{1}{n}\sum_{i=1}^{n}(x_{i}-\mu)^{2}",
    r"\lim_{n\rightarrow\infty}(1+\frac{1}{n})^{n}",
    r"a^{3}-b^{3}=(a-b)(a^{2}+ab+b^{2})",
    r"\frac{\sqrt{3}}{2}\times\frac{2}{\sqrt{3}}=1",
    r"\tan\theta=\frac{\sin\theta}{\cos\theta}",
    r"x_{1}+x_{2}+\cdots+x_{n}",
    r"\int_{0}^{\pi}\sin x dx=2",
    r"\frac{1}{1-x}=\sum_{n=0}^{\infty}x^{n}",
    r"\sqrt{a^{2}+b^{2}}\geq\frac{a+b}{\sqrt{2}}",
    r"\forall x\in A,\exists y\in B,y\geq x^{2}+1",
    r"f(x+h)-f(x)=hf'(x)+\frac{h^{2}}{2}f''(x)",
    r"\frac{a+b}{c+d}\neq\frac{a}{c}+\frac{b}{d}",
    r"\log(xy)=\log x+\log y",
    r"\sum_{i=1}^{n}i^{2}=\frac{n(n+1)(2n+1)}{6}",
    r"\int_{-\infty}^{\infty}e^{-x^{2}}dx=\sqrt{\pi}",
    r"\frac{\frac{1}{x}+\frac{1}{y}}{\frac{1}{x}-\frac{1}{y}}=\frac{y+x}{y-x}",
    r"\frac{a_{1}+a_{2}+\cdots+a_{n}}{n}\geq\sqrt[n]{a_{1}a_{2}\cdots a_{n}}",
    r"\int_{0}^{2\pi}\frac{d\theta}{a+b\cos\theta}=\frac{2\pi}{\sqrt{a^{2}-b^{2}}}",
    r"(x+y)^{n}=\sum_{k=0}^{n}\frac{n!}{k!(n-k)!}x^{k}y^{n-k}",
    r"f(x)=\frac{1}{\sigma\sqrt{2\pi}}e^{-\frac{(x-\mu)^{2}}{2\sigma^{2}}}+\sum_{k=1}^{n}a_{k}x^{k}",
]


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import mathtext

    from hmer_runtime.text.latex import tokenize

    FOLDER.mkdir(exist_ok=True)
    for old in FOLDER.glob("*.png"):
        old.unlink()
    rows = []
    for i, latex in enumerate(EXPRESSIONS):
        name = f"expr_{i:02d}.png"
        # mathtext wants \sqrt[3]{...} and x' as given; dpi sets the symbol size (about 25 px).
        mathtext.math_to_image(f"${latex}$", str(FOLDER / name), dpi=320, format="png")
        rows.append(f"{name}\t{len(tokenize(latex))}\t{latex}")
    LABELS.write_text("file\ttokens\tlatex\n" + "\n".join(rows) + "\n")
    print(f"wrote {len(rows)} images to {FOLDER}")


if __name__ == "__main__":
    main()
