# The two commands of the README:
#   make demo   set up the host and run the pack's main job
#   make test   set up the host and run the tests
.PHONY: host demo test bench bench-sd15 bench-windows bench-wan bench-wan-5b bench-preview

host:
	bash scripts/setup_host.sh

demo: host
	bash -c '. .host/env.sh && "$$FATEZERO_PYTHON" scripts/main_job.py'

# The tests also drive ComfyUI's frontend in Debian's chromium (tests/test_frontend.py).
test:
	bash scripts/setup_host.sh --with-frontend
	bash -c '. .host/env.sh && "$$FATEZERO_PYTHON" -m pytest tests -q -rs'

bench: host
	bash -c '. .host/env.sh && "$$FATEZERO_PYTHON" bench/bench_sd.py'
	@echo "SD1.5's real UNet layout at 512x512 (bench/README.md, 'Memory and time'): make bench-sd15"

# SD1.5's exact UNet (random weights) at 512x512, 2 frames, 5 steps, with a profile: about 40 min on 2 CPU cores
bench-sd15: host
	bash -c '. .host/env.sh && "$$FATEZERO_PYTHON" bench/bench_sd.py $(SD15_BENCH)'

SD15_BENCH = --unet sd15 --size 512 --frames 2 --steps 5 --threads 2 --sweep-frames= --sweep-sizes= --verify-size 128 --profile

# Long clips in windows (README, "Long clips"): memory and time from 8 to 64 frames at a window of 4,
# and the windowed edit's distance from the all-frames edit; about 10 min on 2 CPU cores
# (the run of commit e505d5c)
bench-windows: host
	bash -c '. .host/env.sh && "$$FATEZERO_PYTHON" bench/bench_windows.py --threads 2'

# Wan 2.1 (issue 23): a random-weight model of Wan 2.1 1.3B's shape (1.42 B parameters, float32 on a CPU,
# peak RSS about 11 GB while loading) at 128x128, 9 frames, 10 steps: plain sampling, the inversion, the fused
# and the blend edit, and the GPU estimate for 480p / 81 frames (`bench/bench_wan.py --estimate-only` alone);
# about 7 min on 2 idle CPU cores (the run of commit a55ac97)
bench-wan: host
	bash -c '. .host/env.sh && "$$FATEZERO_PYTHON" bench/bench_wan.py --threads 2'
	# the few-step case of the Wan 2.2 templates (issue 34): CFG 1, 4 steps, 4 fixed-point iterations
	bash -c '. .host/env.sh && "$$FATEZERO_PYTHON" bench/bench_wan.py --threads 2 --cfg 1 --steps 4 --iterations 4'
	# memory at CFG 1 with more image tokens than umT5's 512 text positions (issue 33): the 1.3B widths, 4 blocks
	# (one block's source row is held whatever the depth), 256x256 x 25 frames = 1792 tokens
	bash -c '. .host/env.sh && "$$FATEZERO_PYTHON" bench/bench_wan.py --threads 2 --cfg 1 --steps 4 --iterations 1 --layers 4 --width 256 --height 256 --frames 25'

# Wan 2.2 TI2V 5B's shape (issue 24): 5.0 B random parameters in bfloat16 (peak RSS 19.4 GB while loading, then
# about 10.5 GB), 256x256 and 9 frames (192 tokens), 10 steps; about 31 min on 2 idle CPU cores (commit 7c5e91a)
bench-wan-5b: host
	bash -c '. .host/env.sh && "$$FATEZERO_PYTHON" bench/bench_wan.py --model wan22-5b --dtype bf16 --width 256 --height 256 --threads 2'

# FateZero Attention Preview (issue 25): 48 frames at 512x288, 50 steps, every word and the blend mask; seconds
bench-preview: host
	bash -c '. .host/env.sh && "$$FATEZERO_PYTHON" bench/bench_preview.py'
