# frozen_string_literal: true

# STI: stored in tasks; polymorphic references store "Task".
class Milestone < Task
end
