import pytest

from optimizer.errors import InputError
from optimizer.hetero.inventory import parse_inventory


def test_mixed_box_in_listed_order():
    inv = parse_inventory("1x rtx-5090, 2x rtx-4090, 1x rtx-3090, 1x rtx-a6000, 192GB ddr5, 2TB nvme")
    (b,) = inv.boxes
    assert [g.acc.key for g in b.gpus] == ["rtx-5090", "rtx-4090", "rtx-4090", "rtx-3090", "rtx-a6000"]
    assert [g.cuda for g in b.gpus] == [0, 1, 2, 3, 4]
    assert b.dram_bytes == 192 * 10**9 and b.nvme_bytes == 2 * 10**12
    assert b.host.key == "desktop-am5-2ch-ddr5" and b.nvme_bw == pytest.approx(7.45e9)


def test_aliases_boxes_and_hosts():
    inv = parse_inventory("box1: 4090, a6000, 128GB ddr4; box2: 2x 3090, 64GB ddr5, 1TB nvme gen5, psu 2000W")
    assert [b.name for b in inv.boxes] == ["box1", "box2"]
    assert [g.acc.key for g in inv.boxes[0].gpus] == ["rtx-4090", "rtx-a6000"]
    assert inv.boxes[0].host.key == "desktop-am4-2ch-ddr4"
    assert inv.boxes[1].psu_watts == 2000 and inv.boxes[1].nvme_key == "nvme-gen5-x4"
    assert [g.uid for g in inv.gpus] == ["box1/cuda0", "box1/cuda1", "box2/cuda0", "box2/cuda1"]


@pytest.mark.parametrize(
    "text,msg",
    [
        ("1x rtx-9999, 64GB ddr5", "rtx-9999"),
        ("64GB ddr5", "names no accelerator"),
        ("", "empty inventory"),
        ("1x rtx-4090, 512GB ddr5", "exceeds"),
        ("a: 1x rtx-4090; a: 1x rtx-3090", "given twice"),
        ("1x rtx-4090, host nosuchhost", "nosuchhost"),
    ],
)
def test_bad_inventory_is_one_input_error(text, msg):
    with pytest.raises(InputError, match=msg):
        parse_inventory(text)
