"""The console's first load in a fresh headless Chromium: bytes transferred (compressed) and time to interactive
(from navigation to the sign-in form answering), over several runs, each with an empty cache.

Usage: console_load.py BASE_URL [RUNS]
"""
import os
import statistics
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

base = sys.argv[1]
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
sizes, interactive, loaded = [], [], []
for _ in range(runs):
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
    for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"]:
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")), options=options)
    try:
        started = time.monotonic()
        driver.get(base + "/console")
        WebDriverWait(driver, 15, poll_frequency=0.005).until(lambda d: d.find_elements(By.CSS_SELECTOR, "input[name=email]"))
        interactive.append((time.monotonic() - started) * 1000)
        sizes.append(driver.execute_script("""
            const entries = [performance.getEntriesByType('navigation')[0], ...performance.getEntriesByType('resource')];
            return entries.reduce((sum, e) => sum + (e.transferSize || 0), 0);"""))
        loaded.append(driver.execute_script("return performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd"))
    finally:
        driver.quit()
print(f"first load over {runs} fresh browsers: {statistics.median(sizes) / 1024:.1f} KiB transferred (median; budget 150 KB), "
      f"interactive in {statistics.median(interactive):.0f} ms median ({min(interactive):.0f}-{max(interactive):.0f}), "
      f"DOMContentLoaded at {statistics.median(loaded):.0f} ms median")
