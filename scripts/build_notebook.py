"""Build a notebook from a py:percent-like source: cells split on '# %%' lines."""
import sys, nbformat
src, out = sys.argv[1], sys.argv[2]
text = open(src).read()
cells = []
for chunk in text.split("# %%")[1:]:
    header, _, body = chunk.partition("\n")
    body = body.strip("\n")
    if header.strip().startswith("[markdown]"):
        body = "\n".join(l[2:] if l.startswith("# ") else l.lstrip("#") for l in body.splitlines())
        cells.append(nbformat.v4.new_markdown_cell(body))
    else:
        c = nbformat.v4.new_code_cell(body)
        if "parameters" in header:
            c.metadata["tags"] = ["parameters"]
        cells.append(c)
nb = nbformat.v4.new_notebook(cells=cells)
nb.metadata["kernelspec"] = {"name": "ltlab", "display_name": "ltlab", "language": "python"}
nb.metadata["language_info"] = {"name": "python"}
nbformat.write(nb, out)
