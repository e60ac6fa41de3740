-- Argo CD health check for ProductImport (catalog.productimport.dev/v1alpha1).
--
-- Install as argocd-cm key
--   resource.customizations.health.catalog.productimport.dev_ProductImport
-- (see docs/gitops.md). Argo CD runs this in gopher-lua (Lua 5.1) with only the base,
-- table, package and a reduced os library open: there is no `string` library and no
-- string methods (s:find ...), so this script uses nothing but `..` and tostring().
--
-- The mapping follows the kstatus conventions the operator writes, in the same order
-- kstatus (and so Flux) reads them, so Argo CD and Flux agree on every state the
-- operator writes:
--   no status / stale observedGeneration -> Progressing  (the operator has not caught up)
--   Stalled=True                         -> Degraded     (a terminal failure)
--   Reconciling=True                     -> Progressing  (Queued or JobRunning)
--   Ready=True                           -> Healthy
--   Ready=False                          -> Degraded
-- status.phase is for humans; it is read only when there are no conditions at all.

local WAITING = "Waiting for the operator"

-- Finds a condition by type; nil when absent. Conditions are a Lua array (decoded list).
local function findCondition(conditions, condType)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == condType then
      return c
    end
  end
  return nil
end

local function isTrue(c)
  return c ~= nil and c.status == "True"
end

local function isFalse(c)
  return c ~= nil and c.status == "False"
end

-- "Reason: message", or whichever of the two is set, so a failure always says why.
local function reasonMessage(c, fallback)
  local reason = c.reason
  local message = c.message
  if reason ~= nil and reason ~= "" and message ~= nil and message ~= "" then
    return reason .. ": " .. message
  end
  if message ~= nil and message ~= "" then
    return message
  end
  if reason ~= nil and reason ~= "" then
    return reason
  end
  return fallback
end

-- "stage validate, 120000 rows read" from status.progress; nil when there is none.
-- rowsRead arrives as a Lua number; tostring() of a whole number prints no decimals.
local function progressText(progress)
  if progress == nil then
    return nil
  end
  local parts = {}
  if progress.stage ~= nil and progress.stage ~= "" then
    table.insert(parts, "stage " .. tostring(progress.stage))
  end
  if progress.rowsRead ~= nil then
    table.insert(parts, tostring(progress.rowsRead) .. " rows read")
  end
  if #parts == 0 then
    return nil
  end
  return table.concat(parts, ", ")
end

-- Queued and Running are both Reconciling=True; the reason tells them apart. A running
-- import shows its structured progress when it has one (the condition message repeats
-- it in prose), else the condition message (e.g. "Job x created; waiting ...").
local function progressing(status, c)
  local label = "Running"
  if c ~= nil and c.reason == "Queued" then
    label = "Queued"
  end
  if label == "Running" then
    local p = progressText(status.progress)
    if p ~= nil then
      return label .. ": " .. p
    end
  end
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return label .. ": " .. c.message
  end
  return label
end

local function succeededMessage(status, ready)
  if status.message ~= nil and status.message ~= "" then
    return status.message
  end
  if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
    return ready.message
  end
  return "Import succeeded"
end

local function health(o)
  local hs = {}
  local status = o.status
  if status == nil then
    hs.status = "Progressing"
    hs.message = WAITING
    return hs
  end

  -- A status written for an older spec says nothing about the current one.
  local generation = nil
  if o.metadata ~= nil then
    generation = o.metadata.generation
  end
  local observed = status.observedGeneration
  -- observedGeneration 0 means "never observed": that is what a new object reads as
  -- when the CRD defaults status to {observedGeneration: 0}, the shape that makes
  -- kstatus (Flux) wait for the operator too (docs/gitops.md).
  if observed ~= nil and observed == 0 then
    hs.status = "Progressing"
    hs.message = WAITING
    return hs
  end
  if generation ~= nil and observed ~= nil and observed ~= generation then
    hs.status = "Progressing"
    hs.message = WAITING .. " to observe generation " .. tostring(generation)
      .. " (status is for generation " .. tostring(observed) .. ")"
    return hs
  end

  local conditions = status.conditions
  if conditions ~= nil and #conditions > 0 then
    local stalled = findCondition(conditions, "Stalled")
    local reconciling = findCondition(conditions, "Reconciling")
    local ready = findCondition(conditions, "Ready")
    if isTrue(stalled) then
      hs.status = "Degraded"
      hs.message = reasonMessage(stalled, "Import failed")
      return hs
    end
    if isTrue(reconciling) then
      hs.status = "Progressing"
      hs.message = progressing(status, reconciling)
      return hs
    end
    if isTrue(ready) then
      hs.status = "Healthy"
      hs.message = succeededMessage(status, ready)
      return hs
    end
    if isFalse(ready) then
      hs.status = "Degraded"
      hs.message = reasonMessage(ready, "Import failed")
      return hs
    end
    -- Ready=Unknown (or missing) without Reconciling: the operator is mid-way.
    hs.status = "Progressing"
    if ready ~= nil then
      hs.message = progressing(status, ready)
    else
      hs.message = WAITING
    end
    return hs
  end

  -- No conditions: fall back to the human-facing phase.
  local phase = status.phase
  if phase == "Succeeded" then
    hs.status = "Healthy"
    hs.message = succeededMessage(status, nil)
  elseif phase == "Failed" then
    hs.status = "Degraded"
    hs.message = reasonMessage(status, "Import failed")
  elseif phase == "Queued" then
    hs.status = "Progressing"
    hs.message = "Queued"
  elseif phase == "Running" then
    hs.status = "Progressing"
    hs.message = progressing(status, nil)
  else
    hs.status = "Progressing"
    hs.message = WAITING
  end
  return hs
end

return health(obj)
