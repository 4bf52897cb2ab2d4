"""How every benchmark leaves its results: `<name>.json` (everything measured) and `<name>.md` (the table)."""

import json
import os


def write_results(out_dir: str, name: str, result: dict, text: str, echo: bool = True) -> dict[str, str]:
  """Writes the JSON and the markdown side by side, prints the markdown; returns {ext: path}."""
  os.makedirs(out_dir, exist_ok=True)
  files = {ext: os.path.join(out_dir, f"{name}.{ext}") for ext in ("json", "md")}
  with open(files["json"], "w") as f:
    json.dump(result, f, indent=2)
  with open(files["md"], "w") as f:
    f.write(text)
  if echo:
    print(text)
  return files
