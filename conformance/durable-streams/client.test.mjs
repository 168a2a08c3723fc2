import { test } from "vitest"; test.skip("placeholder", () => {});
