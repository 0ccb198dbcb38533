"""The issued act's data as XML, valid against `docs/comedec-data.xsd`: the same
content as the JSON answer and as the signed PDF."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

NS = "urn:securex:comedec:act-data:1"


def act_data(content: dict[str, Any]) -> bytes:
    ET.register_namespace("", NS)

    def el(parent: ET.Element, name: str, text: str | None = None, **attrs: str) -> ET.Element:
        node = ET.SubElement(parent, f"{{{NS}}}{name}", attrs)
        if text is not None:
            node.text = text
        return node

    root = ET.Element(f"{{{NS}}}actData", {"request": str(content["request"])})
    commune = content["commune"]
    el(root, "commune", commune["name"], insee=commune["insee"])
    act = content["act"]
    el(
        root,
        "act",
        kind=act["kind"],
        year=str(act["year"]),
        number=str(act["number"]) if act["number"] is not None else "0",
    )
    delivery = content["delivery"]
    node = el(
        root,
        "delivery",
        kind=delivery["kind"],
        issuedOn=delivery["issued_on"],
        verificationCode=delivery["verification_code"],
        sha256=delivery["sha256"] or "",
    )
    el(node, "title", delivery["title"])
    el(node, "signer", delivery["signer"] or "")
    fields = el(root, "fields")
    for item in content["fields"]:
        el(fields, "field", item["value"], label=item["label"])
    mentions = el(root, "mentions")
    for text in content["mentions"]:
        el(mentions, "mention", text)
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body
