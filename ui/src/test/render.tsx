import { render } from "@testing-library/react";
import { MemoryRouter, useLocation } from "react-router";
import { App } from "../App";
import { createQueryClient } from "../queries";

let currentLocation = "";
function LocationProbe() {
  const loc = useLocation();
  currentLocation = loc.pathname + loc.search;
  return null;
}

/** Render the whole app at a URL, as the browser would after following a link. */
export function renderAt(path: string) {
  const utils = render(
    <MemoryRouter initialEntries={[path]}>
      <App queryClient={createQueryClient()} />
      <LocationProbe />
    </MemoryRouter>,
  );
  return { ...utils, location: () => currentLocation };
}
