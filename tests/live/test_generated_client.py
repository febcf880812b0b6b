"""A client generated from the committed OpenAPI document by openapi-python-client, with
no warning, runs a scenario against the live server: create a set, generate codes,
assign one, redeem it, and a typed problem for redeeming it again.

openapi/client-config.json maps the CSV alternative of a delivery's target list to a
binary body (openapi-python-client has no text/csv body of its own)."""

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import ADMIN_SECRET

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = Path(sys.executable).parent / "openapi-python-client"


def _generate(into: Path) -> Any:
    out = into / "coupon_client"
    run = subprocess.run(  # noqa: S603 - the generator of the venv, fixed arguments
        [
            str(GENERATOR),
            "generate",
            "--path",
            str(ROOT / "openapi" / "openapi.json"),
            "--config",
            str(ROOT / "openapi" / "client-config.json"),
            "--output-path",
            str(out),
            "--meta",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "warning" not in output.lower(), output
    sys.path.insert(0, str(into))
    return importlib.import_module("coupon_client")


async def test_a_generated_client_runs_a_scenario(
    live_server: str, app: object, tmp_path: Path
) -> None:
    client_package = _generate(tmp_path)
    try:
        models = importlib.import_module("coupon_client.models")
        create_set, generate, assign, redeem = (
            importlib.import_module(f"coupon_client.api.{operation}")
            for operation in (
                "coupon_sets.create_coupon_set",
                "codes.generate_codes",
                "assignments.assign_code",
                "redemptions.redeem_code",
            )
        )
        client = client_package.AuthenticatedClient(base_url=live_server, token=ADMIN_SECRET)
        async with client as http:
            created = await create_set.asyncio(
                client=http, body=models.CouponSetCreate(label="Generated", key="generated")
            )
            assert isinstance(created, models.CouponSetPublic), created
            made = await generate.asyncio(
                "generated", client=http, body=models.CodesGenerate(count=5, length=10)
            )
            assert isinstance(made, models.CodesGenerated), made
            assert made.generated == 5
            assigned = await assign.asyncio(
                "generated", client=http, body=models.AssignmentCreate(recipient_id="r-1")
            )
            assert isinstance(assigned, models.AssignmentPublic), assigned
            redeemed = await redeem.asyncio(
                client=http, body=models.RedemptionRequest(code=assigned.code)
            )
            assert isinstance(redeemed, models.RedemptionPublic), redeemed
            assert redeemed.code == assigned.code
            again = await redeem.asyncio(
                client=http, body=models.RedemptionRequest(code=assigned.code)
            )
            assert isinstance(again, models.Problem), again
            assert again.status == 409
            assert again.type_.endswith("already-redeemed")
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n.split(".")[0] == "coupon_client"]:
            del sys.modules[name]
