"""Rename the images in a `docker save` archive.

    python3 hack/images/archive_tags.py ARCHIVE OLD=NEW...

Every name OLD in the archive (manifest.json's RepoTags and the `repositories` file) becomes
NEW, exactly as given. hack/images/kind-node.sh builds its images under names of its own and
gives them, only in the archives, the names kind's node-image builder and kubeadm look for:
`docker save` would shorten a name on Docker's default registry (`HOST/org/name:tag` is
written `org/name:tag`), and the builder compares names as strings, so it would not find
such an image and would try to fetch it. Names not given are kept; a name given but absent
is an error. The archive is rewritten in place with `repositories` ahead of manifest.json:
kind's builder reads the names from whichever of the two comes first, and of manifest.json
only its first image, while `repositories` names every image (`docker save` writes
manifest.json first). Other members keep their order.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
from typing import Any


def rename(name: str, names: dict[str, str], seen: set[str]) -> str:
    if name in names:
        seen.add(name)
        return names[name]
    return name


def rewrite_manifest(data: bytes, names: dict[str, str], seen: set[str]) -> bytes:
    manifest: list[dict[str, Any]] = json.loads(data)
    for entry in manifest:
        entry["RepoTags"] = [rename(tag, names, seen) for tag in entry.get("RepoTags") or []]
    return json.dumps(manifest).encode()


def rewrite_repositories(data: bytes, names: dict[str, str], seen: set[str]) -> bytes:
    repositories: dict[str, dict[str, str]] = json.loads(data)
    out: dict[str, dict[str, str]] = {}
    for repo, tags in repositories.items():
        for tag, image_id in tags.items():
            full = rename(f"{repo}:{tag}", names, seen)
            new_repo, _, new_tag = full.rpartition(":")
            out.setdefault(new_repo, {})[new_tag] = image_id
    return json.dumps(out).encode()


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not all("=" in arg for arg in argv[1:]):
        print("usage: archive_tags.py ARCHIVE OLD=NEW...", file=sys.stderr)
        return 2
    archive = argv[0]
    names = dict(arg.split("=", 1) for arg in argv[1:])
    seen: set[str] = set()
    tmp = f"{archive}.retag.{os.getpid()}"
    try:
        rewrites = {"repositories": rewrite_repositories, "manifest.json": rewrite_manifest}
        index: dict[str, tuple[tarfile.TarInfo, bytes]] = {}
        with tarfile.open(archive) as src, tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as dst:
            for member in src:
                fileobj = src.extractfile(member) if member.isfile() else None
                if member.name in rewrites and fileobj is not None:
                    data = rewrites[member.name](fileobj.read(), names, seen)
                    member.size = len(data)
                    index[member.name] = (member, data)
                    continue
                dst.addfile(member, fileobj)
            for name in rewrites:  # repositories first
                if name in index:
                    member, data = index[name]
                    dst.addfile(member, io.BytesIO(data))
        if missing := sorted(set(names) - seen):
            print(f"archive_tags.py: {archive} has no {', '.join(missing)}", file=sys.stderr)
            return 1
        os.replace(tmp, archive)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
